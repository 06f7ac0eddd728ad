"""The chat handler's own helpers; the route as a whole is tested end to end in test_chat_e2e.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from workjet_fast import handler
from workjet_fast._workjet_fast import count_chat_tokens as real


def test_large_prompts_are_counted_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []

    def spy(texts: list[tuple[str, str, str | None]], model: str) -> int:
        threads.append(threading.current_thread())
        return real(texts, model)

    monkeypatch.setattr("workjet_fast.handler.count_chat_tokens", spy)
    small: list[Any] = [{"role": "user", "content": "hello"}]
    # One long word: the slowest text to count per byte.
    large: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x" * 70_000}]
    assert sum(len(m["content"]) for m in large) >= handler.COUNT_IN_THREAD_CHARS

    async def count_both() -> tuple[threading.Thread, int, int]:
        return (
            threading.current_thread(),
            await handler._count_prompt(small, "gpt-4o"),
            await handler._count_prompt(large, "gpt-4o"),
        )

    loop_thread, n_small, n_large = asyncio.run(count_both())
    assert threads[0] is loop_thread
    assert threads[1] is not loop_thread and threads[1].name.startswith("workjet-count")
    assert n_small == real([("user", "hello", None)], "gpt-4o")
    assert n_large == real([("system", "be brief", None), ("user", "x" * 70_000, None)], "gpt-4o")
