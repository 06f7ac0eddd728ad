"""A fake OpenAI-compatible upstream over real HTTP on a free loopback port.

Behaviour is chosen by the model name the gateway sends (the deployment's provider model name):

- anything else: a normal answer; the reply echoes the last user message (`reply` overrides it)
- ``fail-500``, ``fail-429``, ``fail-400``, ``fail-401``: that status with OpenAI's error envelope
- ``stall``: never answers (until the test ends)
- ``break``: streams a few chunks, then drops the connection
- ``slow``: streams one chunk every 50 ms for a long time (for disconnect tests)
- ``split:<N>``: streams the reply in pieces of N bytes of raw SSE (frames split anywhere)
- ``bursts:<N>``: streams the reply's frames in N writes of several whole frames each, 20 ms apart
- ``cut:<I>``: streams the reply's text as two content deltas, cut at character I
- ``chars``: streams the reply's text one character per content delta

Every request is recorded (`requests`: path, headers, JSON body); `disconnects` counts streams whose
client (the gateway) went away before the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import Fake, Handler, ServerThread, free_port, write_split

__all__ = ["FakeOpenAI", "Recorded", "free_port"]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI(Fake):
    reply: str | None = None
    chunks: int = 6
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    disconnects: int = 0
    completed_streams: int = 0
    _server: ServerThread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/v1/chat/completions", self._chat)]

    def _text(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        last = body["messages"][-1].get("content")
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        return f"You said: {last}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        model = str(body.get("model", ""))
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            err = {"error": {"message": f"fake upstream says {status}", "type": "fake_error", "code": None}}
            return web.json_response(err, status=status)
        if model == "stall":
            await asyncio.sleep(3600)
        text = self._text(body)
        created = int(time.time())
        cid = "chatcmpl-fake" + str(len(self.requests))
        usage = {"prompt_tokens": 11, "completion_tokens": max(1, len(text) // 4), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        return await self._stream(request, body, model, text, cid, created, usage)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, text: str, cid: str, created: int, usage: Any
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if include_usage:
                c["usage"] = None
            return b"data: " + orjson.dumps(c) + b"\n\n"

        n = max(1, self.chunks)
        step = max(1, -(-len(text) // n))
        frames = [chunk({"role": "assistant", "content": ""})]
        if model.startswith("cut:"):
            cut = int(model.split(":", 1)[1])
            pieces = [text[:cut], text[cut:]]
        elif model == "chars":
            pieces = list(text)
        else:
            pieces = [text[i : i + step] for i in range(0, len(text), step)]
        frames += [chunk({"content": p}) for p in pieces if p]
        frames.append(chunk({}, "stop"))
        if include_usage:
            u = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
            u["usage"] = usage
            frames.append(b"data: " + orjson.dumps(u) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        try:
            if model == "break":
                for f in frames[:3]:
                    await resp.write(f)
                await asyncio.sleep(0.05)
                if request.transport is not None:
                    request.transport.close()
                return resp
            if model == "slow":
                for i in range(2000):
                    await resp.write(chunk({"content": f"tick {i} "}))
                    await asyncio.sleep(0.05)
            elif model.startswith("split:"):
                await write_split(resp, frames, int(model.split(":", 1)[1]))
            elif model.startswith("bursts:"):
                n = int(model.split(":", 1)[1])
                size = -(-len(frames) // n)
                for i in range(0, len(frames), size):
                    await resp.write(b"".join(frames[i : i + size]))
                    await asyncio.sleep(0.02)  # each group its own read at the gateway
            else:
                for f in frames:
                    await resp.write(f)
            await resp.write_eof()
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp
