"""Anthropic's Messages API behind the OpenAI chat format, both ways.

Reference: https://docs.anthropic.com/en/api/messages (request and response) and
https://docs.anthropic.com/en/api/messages-streaming (events, translated in `anthropic_stream.py`).
`POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version` headers.

Request, OpenAI -> Anthropic:

- `system` and `developer` messages, wherever they are, are joined (blank line between) into `system`.
- `tool` messages become `tool_result` blocks in a user turn; assistant `tool_calls` become `tool_use` blocks
  (arguments parsed from their JSON string). Consecutive messages of one role are merged into one turn, and
  in a user turn `tool_result` blocks go first, as Anthropic requires.
- The first message must be a user turn: when the conversation starts with an assistant message (or has only
  system messages) a user turn with the text `(conversation start)` is put first, so requests that OpenAI
  accepts keep working; the placeholder is visible to the model, which is why it is short and neutral.
- Content parts: text; `image_url` with a `data:` URL -> a base64 image block, with an http(s) URL -> a URL
  image block. Other part types are refused with 400.
- `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else the provider's
  `default_max_tokens`.
- `temperature`: OpenAI allows 0-2, Anthropic 0-1; values above 1 are clamped to 1 (the most random Anthropic
  allows) rather than refused, so clients written for OpenAI keep working.
- `top_p` as is; `stop` -> `stop_sequences`; `user` -> `metadata.user_id`; `tools[].function` -> `tools` with
  `input_schema`; `tool_choice` auto/required/none/{function} -> auto/any/none/{tool};
  `parallel_tool_calls: false` -> `disable_parallel_tool_use`. `n` > 1 is refused with 400; penalties, `seed`,
  `logprobs` and `response_format` have no Anthropic equivalent and are dropped.

Response, Anthropic -> OpenAI: text blocks joined into `message.content`, `tool_use` blocks into
`message.tool_calls` (arguments as a JSON string), `stop_reason` -> `finish_reason`, usage with cache reads and
writes counted into `prompt_tokens` (as OpenAI counts cached tokens), id `chatcmpl-<message id>`.
Errors: Anthropic's `{"type":"error","error":{"type","message"}}` -> `UpstreamFailure("HTTP <status>: <message>")`;
429, 529 (overloaded) and 5xx are retryable. The API key travels in a header only, never in a message.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from workjet_fast.config import ProviderConfig
from workjet_fast.errors import BadRequest
from workjet_fast.providers.anthropic_stream import FINISH_REASONS, AnthropicStream, chat_id, openai_usage
from workjet_fast.providers.base import Provider, UpstreamFailure, UpstreamStream
from workjet_fast.providers.http import HttpClient

__all__ = ["AnthropicProvider", "from_anthropic", "to_anthropic"]

OPENING_USER_TEXT = "(conversation start)"


class AnthropicProvider(Provider):
    def __init__(self, config: ProviderConfig, client: HttpClient) -> None:
        super().__init__(config, client)
        self._url = f"{config.base_url}/v1/messages"
        headers = {"content-type": "application/json", "anthropic-version": config.anthropic_version, **config.headers}
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._headers = headers

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = orjson.dumps(to_anthropic(model, body, self.config.default_max_tokens))
        msg = await self._post_json(self._url, payload)
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
            raise UpstreamFailure("the upstream answered 200 without `content`", status=502)
        return from_anthropic(msg, model)

    async def stream(self, model: str, body: dict[str, Any]) -> UpstreamStream:
        req = to_anthropic(model, body, self.config.default_max_tokens)
        req["stream"] = True
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        return AnthropicStream(await self._open(self._url, orjson.dumps(req)), model, include_usage)


# ---- request ---------------------------------------------------------------------------------------------------


def to_anthropic(model: str, body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat request -> an Anthropic Messages request (see the module docstring for the rules)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest("`n` other than 1 is not supported by this model's provider.", param="n")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(body.get("messages") or ()):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object.", param="messages")
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text_only(m.get("content"), i)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(m.get("content"), i)
            kind = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, i)
            kind = "assistant"
        elif role == "tool":
            blocks = [_tool_result(m, i)]
            kind = "user"
        else:
            raise BadRequest(
                f"messages[{i}].role {role!r} is not supported by this model's provider.", param="messages"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == kind:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": kind, "content": blocks})
    for t in turns:
        if t["role"] == "user" and len(t["content"]) > 1:
            t["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable: tool results first
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": OPENING_USER_TEXT}]})
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        # a final assistant turn is a prefill; Anthropic refuses one ending in whitespace
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()

    out: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": _max_tokens(body, default_max_tokens)}
    if system:
        out["system"] = "\n\n".join(system)
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [str(s) for s in stop]
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None and tools:
        out["tool_choice"] = choice
    return out


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def _text_only(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for p in content:
            if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)):
                raise BadRequest(f"messages[{i}] may only hold text parts.", param="messages")
            parts.append(p["text"])
        return "\n".join(parts)
    raise BadRequest(f"messages[{i}].content must be a string or a list of parts.", param="messages")


def _user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"messages[{i}].content must be a string or a list of parts.", param="messages")
    blocks: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text" and isinstance(p.get("text"), str):
            if p["text"]:
                blocks.append({"type": "text", "text": p["text"]})
        elif kind == "image_url":
            blocks.append(_image(p.get("image_url"), i))
        else:
            raise BadRequest(f"messages[{i}]: content part type {kind!r} is not supported.", param="messages")
    return blocks


def _image(spec: Any, i: int) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if isinstance(url, str) and url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if sep and encoding == "base64" and media_type.startswith("image/"):
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    elif isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise BadRequest(f"messages[{i}]: image_url must be a base64 data: URL or an http(s) URL.", param="messages")


def _assistant_blocks(m: dict[str, Any], i: int) -> list[dict[str, Any]]:
    text = _text_only(m.get("content"), i)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in m.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"messages[{i}].tool_calls: each needs function.name.", param="messages")
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args) if isinstance(args, str) else args
        except orjson.JSONDecodeError:
            raise BadRequest(f"messages[{i}].tool_calls: arguments must be a JSON object.", param="messages") from None
        if not isinstance(parsed, dict):
            raise BadRequest(f"messages[{i}].tool_calls: arguments must be a JSON object.", param="messages")
        blocks.append({"type": "tool_use", "id": call.get("id") or f"toolu_{i}", "name": fn["name"], "input": parsed})
    return blocks


def _tool_result(m: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"messages[{i}]: a tool message needs tool_call_id.", param="messages")
    return {"type": "tool_result", "tool_use_id": call_id, "content": _text_only(m.get("content"), i)}


def _tool(t: Any, i: int) -> dict[str, Any]:
    fn = t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRequest(f"tools[{i}] must be a function tool with a name.", param="tools")
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    raise BadRequest("tool_choice must be auto, required, none or a function.", param="tool_choice")


# ---- response --------------------------------------------------------------------------------------------------


def from_anthropic(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages response -> an OpenAI `chat.completion`."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input", {})).decode()},
                }
            )
        # thinking and other block types have no OpenAI equivalent and are left out
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    stop = msg.get("stop_reason")
    return {
        "id": chat_id(str(msg.get("id") or "")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model") or model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH_REASONS.get(str(stop), "stop")}
        ],
        "usage": openai_usage(msg.get("usage") or {}),
    }
