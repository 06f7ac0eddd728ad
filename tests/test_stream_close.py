"""A stream the handler leaves early closes its inner async generators itself, in order, not through the event
loop's finalizer hook (which would add a thread-safe wake-up and a task per stream, and run their `finally`
blocks at some later turn of the loop)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from workjet_fast.pipeline.route import _GuardedStream
from workjet_fast.providers.anthropic_stream import AnthropicStream
from workjet_fast.providers.base import UpstreamStream
from workjet_fast.providers.http import StreamBody, aclose_iterator


class _Inner(UpstreamStream):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncGenerator[bytes, None]:
        try:
            for i in range(3):
                yield b"data: %d\n\n" % i
        finally:
            self.log.append("inner closed")

    async def aclose(self) -> None:
        self.log.append("inner released")


class _Body(StreamBody):
    status = 200
    headers: Mapping[str, str] = {}

    def __init__(self, log: list[str], pieces: list[bytes]) -> None:
        self.log = log
        self.pieces = pieces

    async def read(self) -> bytes:
        return b"".join(self.pieces)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for p in self.pieces:
                yield p
        finally:
            self.log.append("chunks closed")

    def close(self) -> None:
        self.log.append("body closed")


async def _with_finalizer_watch(body: Any) -> list[Any]:
    """Run `body()` with an async generator finalizer hook that records what reaches it."""
    reached: list[Any] = []
    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=old.firstiter, finalizer=reached.append)
    try:
        await body()
    finally:
        sys.set_asyncgen_hooks(*old)
    return reached


def test_guarded_stream_closes_its_inner_generator_before_aclose_returns() -> None:
    log: list[str] = []

    async def run() -> None:
        stream = _GuardedStream(_Inner(log), asyncio.get_running_loop().time() + 60, lambda _msg: None)
        async for piece in stream:
            assert piece == b"data: 0\n\n"
            break  # what the handler does once the relay is done
        await stream.aclose()
        log.append("aclose returned")

    reached = asyncio.run(_with_finalizer_watch(run))
    assert log == ["inner closed", "inner released", "aclose returned"]
    assert reached == []


def test_anthropic_stream_closes_the_body_chunks_before_the_body() -> None:
    log: list[str] = []
    events = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    )

    async def run() -> None:
        stream = AnthropicStream(_Body(log, [events, events]), "claude-test", include_usage=False)
        async for piece in stream:
            assert b"data:" in piece
            break
        await stream.aclose()
        log.append("aclose returned")

    reached = asyncio.run(_with_finalizer_watch(run))
    assert log[:2] == ["chunks closed", "body closed"]
    assert log[-1] == "aclose returned"
    assert reached == []


def test_aclose_iterator_leaves_plain_iterators_alone() -> None:
    class Plain:
        def __aiter__(self) -> Plain:
            return self

        async def __anext__(self) -> bytes:
            raise StopAsyncIteration

    asyncio.run(aclose_iterator(Plain()))  # no aclose: nothing to do, no error
