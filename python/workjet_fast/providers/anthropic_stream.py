"""Anthropic's streaming events -> OpenAI `chat.completion.chunk` SSE frames.

Reference: https://docs.anthropic.com/en/api/messages-streaming. Anthropic sends
`message_start`, then per content block `content_block_start`, `content_block_delta` (`text_delta` or
`input_json_delta`), `content_block_stop`, then `message_delta` (stop reason, cumulative usage) and
`message_stop`; `ping` may come anywhere and an `error` event may end the stream. Unknown event types are
ignored, as Anthropic asks of clients.

What the client sees: every chunk carries one stable id (`chatcmpl-<message id>`) and `created`; the first has
`delta.role = "assistant"`; a tool call opens with its index, id and function name, then argument fragments
under the same index; the last chunk has the `finish_reason`; with `stream_options.include_usage` one more
chunk has `usage` and `choices: []`; then `data: [DONE]`. An `error` event becomes a `data: {"error": {...}}`
frame and the stream ends (no `[DONE]`, so clients see it ended abnormally), as does a stream that stops
before `message_stop`.

`AnthropicTranslator` is sans-IO (events in, bytes out); `AnthropicStream` feeds it from the network through
the Rust SSE parser, crossing into Rust once per network read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson

from workjet_fast._workjet_fast import SseError, SseParser
from workjet_fast.providers.base import UpstreamFailure, UpstreamStream
from workjet_fast.providers.http import StreamBody, aclose_iterator

__all__ = ["FINISH_REASONS", "AnthropicStream", "AnthropicTranslator", "chat_id", "openai_usage"]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
DONE = b"data: [DONE]\n\n"


def chat_id(message_id: str) -> str:
    return "chatcmpl-" + (message_id[4:] if message_id.startswith("msg_") else message_id)


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage; cache reads and writes count as prompt tokens, as OpenAI counts them."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class AnthropicTranslator:
    """Sans-IO: `event(name, data)` and `finish()` return the OpenAI SSE bytes that became ready."""

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = "chatcmpl-pending"
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.ended = False
        self.failed = False
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _frame(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def _error(self, message: str, type_: str = "api_error") -> bytes:
        self.ended = self.failed = True
        return _frame({"error": {"message": message, "type": type_, "code": None, "param": None}})

    def event(self, name: str | None, data: str) -> bytes:
        if self.ended:
            return b""
        try:
            ev = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._error("the provider sent an event that is not JSON")
        if not isinstance(ev, dict):
            return b""
        kind = ev.get("type") or name
        if kind == "content_block_delta":
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text") or ""
                return self._chunk({"content": text}) if text else b""
            if dtype == "input_json_delta":
                idx = self._tool_index.get(ev.get("index", -1))
                part = delta.get("partial_json") or ""
                if idx is None or not part:
                    return b""
                return self._chunk({"tool_calls": [{"index": idx, "function": {"arguments": part}}]})
            return b""  # thinking_delta, signature_delta, ...: no OpenAI equivalent
        if kind == "message_start":
            msg = ev.get("message") or {}
            self.id = chat_id(str(msg.get("id") or "msg"))
            self.usage.update(msg.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = ev.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self._tool_index[ev.get("index", -1)] = len(self._tool_index)
                call = {
                    "index": idx,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "message_delta":
            self.stop_reason = (ev.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.usage.update(ev.get("usage") or {})
            return b""
        if kind == "message_stop":
            self.ended = True
            out = self._chunk({}, FINISH_REASONS.get(self.stop_reason or "end_turn", "stop"))
            if self.include_usage:
                out += _frame(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": openai_usage(self.usage),
                    }
                )
            return out + DONE
        if kind == "error":
            err = ev.get("error") or {}
            return self._error(
                str(err.get("message") or "the provider reported an error"), str(err.get("type") or "api_error")
            )
        return b""  # ping, content_block_stop, and event types added later

    def finish(self) -> bytes:
        """The upstream closed the stream: an error frame when it did so before `message_stop`."""
        if self.ended:
            return b""
        return self._error("the provider ended the stream before it was complete")


class AnthropicStream(UpstreamStream):
    """An open Anthropic stream, yielding OpenAI SSE bytes; one parser call per network read."""

    def __init__(self, body: StreamBody, model: str, include_usage: bool) -> None:
        self._body = body
        self._translator = AnthropicTranslator(model, include_usage)
        self._gen: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._gen = self._pieces()
        return self._gen

    async def _pieces(self) -> AsyncGenerator[bytes, None]:
        parser = SseParser()
        tr = self._translator
        chunks = self._body.chunks()
        try:
            async for piece in chunks:
                out = b"".join([tr.event(name, data) for name, data in _parse(parser.feed, piece)])
                if out:
                    yield out
                if tr.failed:
                    return  # after message_stop keep reading to EOF, so the connection can be reused
            out = b"".join([tr.event(name, data) for name, data in _parse(parser.finish)]) + tr.finish()
            if out:
                yield out
        finally:
            try:
                await aclose_iterator(chunks)  # now, not by the event loop's finalizer hook (a wake-up and a task)
            finally:
                self._body.close()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()
        self._body.close()


def _parse(step: Callable[..., list[tuple[str | None, str]]], *args: bytes) -> list[tuple[str | None, str]]:
    try:
        return step(*args)
    except SseError as e:  # a line or an event over the parser's size cap
        raise UpstreamFailure(f"the provider's event stream is malformed: {e}", status=502) from None
