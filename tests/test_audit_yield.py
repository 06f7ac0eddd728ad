"""The audit writer gives the core back to the event loop inside a batch while the gateway serves few requests.

A batch's insert on SQLite is CPU work on the worker's own core; while one request is in flight it would wait for
the whole batch. So the writer splits the batch into short statements and yields between them (and before the
commit), still in one transaction; with more requests in flight, or on PostgreSQL, it does not."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import WORKJET, base_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_audit_store import ENGINES, fresh_url, rec
from tests.test_audit_writer import record, rows_in, verified
from workjet_fast.app import create_app
from workjet_fast.audit import AuditLog, store as store_module, writer as writer_module
from workjet_fast.audit.chain import Chain, verify
from workjet_fast.audit.store import PAUSED_ROWS, AuditStore
from workjet_fast.config import load_settings
from workjet_fast.config.audit import AuditConfig
from workjet_fast.pipeline.route import Router


@pytest.mark.parametrize("kind", ENGINES)
def test_a_paused_insert_on_sqlite_is_short_statements_with_a_pause_before_each_and_the_commit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[Any] = []
    real = store_module._insert_rows_sql
    monkeypatch.setattr(store_module, "_insert_rows_sql", lambda n: events.append(n) or real(n))
    with fresh_url(kind, tmp_path) as url:
        store, reader = AuditStore.open(url), AuditStore.open(url)
        try:
            store.migrate()
            seen: list[int] = []

            def pause() -> None:
                events.append("pause")
                seen.append(reader.count())  # from another connection: the batch is one transaction

            store.insert(Chain("c").link(rec(i) for i in range(2 * PAUSED_ROWS + 8)), pause=pause)
            assert store.count() == 2 * PAUSED_ROWS + 8 and verify(store).ok
        finally:
            store.close()
            reader.close()
    if kind == "sqlite":
        assert events == ["pause", PAUSED_ROWS, "pause", PAUSED_ROWS, "pause", 8, "pause"]
        assert seen == [0, 0, 0, 0]
    else:  # the thread waits on the server during each statement: no pauses, the usual statement sizes
        assert events == [32, 8]


def test_the_writer_yields_only_while_fewer_than_yield_below_requests_are_in_flight(tmp_path: Path) -> None:
    spill = str(tmp_path / "spill.jsonl")
    log = AuditLog(AuditConfig(spill_path=spill), f"sqlite:///{tmp_path}/a.db")
    w = log._writer
    assert w is not None and AuditConfig().yield_below == 2
    assert w._pause() is None  # no load probe: the gateway did not say
    load = [0]
    log.watch_load(lambda: load[0])
    for n, yields in [(0, True), (1, True), (2, False), (40, False)]:
        load[0] = n
        assert (w._pause() is os.sched_yield) is yields, n
    w.cfg = replace(w.cfg, yield_below=0)
    load[0] = 0
    assert w._pause() is None  # 0: never
    log.close()


def test_a_writer_that_yields_stores_every_record_chained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yields: list[int] = []
    monkeypatch.setattr(writer_module, "_YIELD", lambda: yields.append(1))
    sizes: list[int] = []
    real = store_module._insert_rows_sql
    monkeypatch.setattr(store_module, "_insert_rows_sql", lambda n: sizes.append(n) or real(n))
    url = f"sqlite:///{tmp_path}/a.db"
    log = AuditLog(AuditConfig(spill_path=str(tmp_path / "spill.jsonl"), batch_size=64, flush_interval=0.01), url)
    log.watch_load(lambda: 1)
    for i in range(300):
        log.submit(record(i))
    log.start()  # five batches: four of 64, one of 44
    assert log.close(timeout=30)
    assert sorted(rows_in(url)) == sorted(record(i)["request_id"] for i in range(300)) and verified(url)
    assert sizes == [PAUSED_ROWS] * 4 * 4 + [16, 16, 8, 4] and len(yields) == len(sizes) + 5  # and before commits


def test_the_gateway_counts_its_requests_in_flight_for_the_writer(
    tmp_path: Path, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "workjet.yaml"
    cfg.write_text(base_config(fake_upstream.base_url, tmp_path))
    created = subprocess.run([WORKJET, "keys", "create", "--name", "t", "--config", str(cfg)],
                             capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    auth = {"authorization": f"Bearer {created.stdout.strip()}"}
    probes: list[Callable[[], int]] = []
    real_watch = AuditLog.watch_load
    monkeypatch.setattr(AuditLog, "watch_load", lambda self, p: probes.append(p) or real_watch(self, p))
    during: list[int] = []
    for name in ("complete", "stream"):
        real = getattr(Router, name)

        async def spy(self: Router, *a: Any, _real: Any = real, **k: Any) -> Any:
            during.append(probes[0]())
            return await _real(self, *a, **k)

        monkeypatch.setattr(Router, name, spy)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(create_app(load_settings(cfg))) as c:
        after = []
        for body, headers, status in [
            (chat, auth, 200),
            (chat | {"stream": True}, auth, 200),
            (chat | {"model": "broken"}, auth, 502),
            (chat, {"authorization": "Bearer nope"}, 401),
            (b"{", auth, 400),
        ]:
            kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
            assert c.post("/v1/chat/completions", headers=headers, **kw).status_code == status
            after.append(probes[0]())
    assert len(probes) == 1
    assert during == [1, 1, 1]  # the request itself, while the provider is called
    assert after == [0, 0, 0, 0, 0]  # every way out, errors included, counts the request off
