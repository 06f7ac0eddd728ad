"""The chat handler's own helpers and how a stream's writes are cut; the route as a whole is tested end to end in
test_chat_e2e.py."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import WORKJET, base_config
from tests.fakes.openai_upstream import FakeOpenAI
from workjet_fast import handler
from workjet_fast._workjet_fast import count_chat_tokens as real
from workjet_fast.app import create_app
from workjet_fast.config import load_settings
from workjet_fast.gateway import Gateway


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


def _spied(app: Any, bodies: list[bytes]) -> Any:
    """The app, with the body of every HTTP response message it sends kept in `bodies`."""

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def keep(message: Any) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))
            await send(message)

        await app(scope, receive, keep)

    return spy


@pytest.mark.parametrize(("model", "reads"), [("burst", 1), ("burst2", 2)])
@pytest.mark.parametrize("others", [0, 1])
def test_a_read_of_several_events_has_its_first_event_apart_only_first_and_alone(
    model: str, reads: int, others: int, tmp_path: Path, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`burst` writes a whole stream at once, `burst2` in two writes of several events. While the request is the
    only one in flight, the first event of the first read is sent before the rest of it is relayed; every other
    read, and every read with another request in flight, leaves in one write."""

    class Busy(Gateway):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.in_flight = others  # requests in flight besides the one under test

    monkeypatch.setattr("workjet_fast.app.Gateway", Busy)
    cfg = tmp_path / "workjet.yaml"
    cfg.write_text(base_config(fake_upstream.base_url, tmp_path))
    created = subprocess.run([WORKJET, "keys", "create", "--name", "t", "--config", str(cfg)],
                             capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    bodies: list[bytes] = []
    chat = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hello gateway"}]}
    with TestClient(_spied(create_app(load_settings(cfg)), bodies)) as c:
        r = c.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {created.stdout.strip()}"})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    texts = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(texts) == "You said: hello gateway" and events[-1] == b"data: [DONE]"
    assert b"".join(bodies) == r.content
    if others:
        assert len(bodies) == reads  # one write per read
    else:
        assert len(bodies) == reads + 1 and bodies[0] == events[0] + b"\n\n"  # the first event, then the rest


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"data: a\n\ndata: b\n\n", 9),
        (b"data: a\r\n\r\ndata: b\r\n\r\n", 11),
        (b": keep-alive\n\ndata: a\n\n", 14),
        (b"data: a\r\n\r\ndata: b\n\n", 11),  # the earlier of the two wins
        (b"data: a\n", -1),
    ],
)
def test_the_first_event_ends_after_its_blank_line(data: bytes, end: int) -> None:
    assert handler._first_event_end(data) == end
