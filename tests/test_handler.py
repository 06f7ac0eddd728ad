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
    huge: list[Any] = [{"role": "user", "content": "word " * (handler.COUNT_ALONE_CHARS // 5 + 1)}]
    assert handler.COUNT_IN_THREAD_CHARS <= len("be brief") + 70_000 < handler.COUNT_ALONE_CHARS

    async def count_all() -> tuple[threading.Thread, list[int]]:
        loop_thread = threading.current_thread()
        return loop_thread, [await handler._count_prompt(m, "gpt-4o") for m in (small, large, huge)]

    loop_thread, counts = asyncio.run(count_all())
    assert threads[0] is loop_thread
    assert threads[1] is not loop_thread and not threads[1].name.startswith("workjet-count")
    assert threads[2].name.startswith("workjet-count")
    assert trims == [threads[2]]  # the heap is trimmed after the huge count only, in its thread
    assert counts == [
        real([("user", "hello", None)], "gpt-4o"),
        real([("system", "be brief", None), ("user", "x" * 70_000, None)], "gpt-4o"),
        real([("user", huge[0]["content"], None)], "gpt-4o"),
    ]
