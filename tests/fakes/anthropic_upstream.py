"""A fake Anthropic Messages API over real HTTP on a free loopback port.

Formats follow https://docs.anthropic.com/en/api/messages and .../messages-streaming: the response object,
the error envelope `{"type": "error", "error": {"type", "message"}}`, and SSE as Anthropic sends it
(`event: message_start\\ndata: {...}\\n\\n`, with a `ping` after the first content block starts).
It validates like the real API where the gateway's translation matters: `x-api-key` and `anthropic-version`
headers, `max_tokens` required, roles strictly alternating starting with user, `temperature` within 0-1,
`tool_result` blocks first in their user turn.

Behaviour is chosen by the model name:

- anything else: a text reply echoing the last user text (`reply` overrides it); when the request has
  tools and the last user turn holds no `tool_result`, a `tool_use` of the first tool with `tool_input`
- ``fail-<status>``: that status with Anthropic's error envelope (529 is `overloaded_error`)
- ``error-midstream``: streams a little text, then an `error` event (overloaded)
- ``truncate``: streams a little text, then closes without `message_stop`
- ``split:<N>``: streams raw SSE in pieces of N bytes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import Fake, Handler, ServerThread, write_split
from tests.fakes.openai_upstream import Recorded

API_KEY = "sk-ant-fake-secret-key"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass
class FakeAnthropic(Fake):
    reply: str | None = None
    tool_input: dict[str, Any] = field(default_factory=lambda: {"city": "Paris", "unit": "celsius"})
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _server: ServerThread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/v1/messages", self._messages)]

    # ---- validation as the real API does it -------------------------------------------------------------------

    @staticmethod
    def _problem(request: web.Request, body: Any) -> tuple[int, str] | None:
        if request.headers.get("x-api-key") != API_KEY:
            return 401, "invalid x-api-key"
        if not request.headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "body must be an object"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: Field required"
        t = body.get("temperature")
        if t is not None and not 0 <= t <= 1:
            return 400, "temperature: Input should be less than or equal to 1"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "messages: at least one message is required"
        for i, m in enumerate(messages):
            if m.get("role") != ("user" if i % 2 == 0 else "assistant"):
                return 400, f"messages.{i}: roles must alternate between user and assistant, starting with user"
            content = m.get("content")
            if isinstance(content, list):
                kinds = [b.get("type") for b in content]
                if kinds != sorted(kinds, key=lambda k: k != "tool_result"):
                    return 400, f"messages.{i}: tool_result blocks must come first"
                if any(b.get("type") == "text" and not b.get("text") for b in content):
                    return 400, f"messages.{i}: text content blocks must be non-empty"
        return None

    # ---- answers ----------------------------------------------------------------------------------------------

    def _content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        last = body["messages"][-1]
        content = last["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if body.get("tools") and not results and last["role"] == "user":
            tool = body["tools"][0]
            return [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{len(self.requests)}",
                    "name": tool["name"],
                    "input": self.tool_input,
                },
            ]
        if results:
            text = f"Tool said: {results[0].get('content')}"
        elif self.reply is not None:
            text = self.reply
        else:
            text = "You said: " + " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        return [{"type": "text", "text": text}]

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.json_response(error_body(400, "body is not JSON"), status=400)
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            return web.json_response(error_body(status, f"fake anthropic says {status}"), status=status)
        problem = self._problem(request, body)
        if problem is not None:
            return web.json_response(error_body(*problem), status=problem[0])
        content = self._content(body)
        stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        mid = f"msg_fake{len(self.requests)}"
        usage = {"input_tokens": 21, "output_tokens": 7}
        if not body.get("stream"):
            message = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
            return web.json_response(message)
        return await self._stream(request, model, mid, content, stop, usage)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        mid: str,
        content: list[dict[str, Any]],
        stop: str,
        usage: dict[str, int],
    ) -> web.StreamResponse:
        start: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
        }
        frames = [sse("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(content):
            if block["type"] == "text":
                frames.append(
                    sse(
                        "content_block_start",
                        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                    )
                )
                if i == 0:
                    frames.append(sse("ping", {"type": "ping"}))
                text = block["text"]
                for j in range(0, len(text), 5):
                    delta = {"type": "text_delta", "text": text[j : j + 5]}
                    frames.append(
                        sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                    )
            else:
                cb = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                frames.append(
                    sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": cb})
                )
                args = orjson.dumps(block["input"]).decode()
                frames.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": ""},
                        },
                    )
                )
                for j in range(0, len(args), 7):
                    delta = {"type": "input_json_delta", "partial_json": args[j : j + 7]}
                    frames.append(
                        sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                    )
            frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
        frames.append(sse("message_delta", end))
        frames.append(sse("message_stop", {"type": "message_stop"}))

        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        )
        await resp.prepare(request)
        if model in ("error-midstream", "truncate"):
            for f in frames[:4]:
                await resp.write(f)
            if model == "error-midstream":
                await resp.write(sse("error", error_body(529, "Overloaded")))
            await resp.write_eof()
            return resp
        if model.startswith("split:"):
            await write_split(resp, frames, int(model.split(":", 1)[1]))
        else:
            for f in frames:
                await resp.write(f)
        await resp.write_eof()
        return resp
