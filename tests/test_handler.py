"""The chat handler's own helpers; the route as a whole is tested end to end in test_chat_e2e.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from workjet_fast import handler
from workjet_fast._workjet_fast import count_chat_tokens as real


def test_prompts_are_counted_where_their_size_says(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    trims: list[threading.Thread] = []

    def spy(texts: list[tuple[str, str, str | None]], model: str) -> int:
        threads.append(threading.current_thread())
        return real(texts, model)

    monkeypatch.setattr("workjet_fast.handler.count_chat_tokens", spy)
    monkeypatch.setattr("workjet_fast.handler.release_free_heap", lambda: trims.append(threading.current_thread()))
    small: list[Any] = [{"role": "user", "content": "hello"}]
    # One long word: the slowest text to count per byte.
    large: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x" * 70_000}]
    larger: list[Any] = [{"role": "user", "content": "y" * handler.TRIM_AFTER_CHARS}]
    huge: list[Any] = [{"role": "user", "content": "word " * (handler.COUNT_ALONE_CHARS // 5 + 1)}]
    assert handler.COUNT_IN_THREAD_CHARS <= len("be brief") + 70_000 < handler.TRIM_AFTER_CHARS
    prompts = (small, large, larger, huge)

    async def count_all() -> tuple[threading.Thread, list[int]]:
        loop_thread = threading.current_thread()
        return loop_thread, [await handler._count_prompt(m, "gpt-4o") for m in prompts]

    loop_thread, counts = asyncio.run(count_all())
    assert threads[0] is loop_thread
    for t in threads[1:3]:
        assert t is not loop_thread and not t.name.startswith("workjet-count")  # the default executor
    assert threads[3].name.startswith("workjet-count")
    assert trims == threads[2:]  # the heap is trimmed after the two largest counts, in their threads
    assert counts == [real([(m["role"], m["content"], None) for m in p], "gpt-4o") for p in prompts]
