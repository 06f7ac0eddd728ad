"""The writer: nothing lost on close, database outages, a full queue, orphan spill files, bad records."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_upstream import free_port
from tests.test_audit_store import ENGINES, fresh_url
from workjet_fast.audit import AuditLog, verify
from workjet_fast.audit.spill import SpillFile, lock_orphan, read_rows
from workjet_fast.audit.store import AuditStore, Filters
from workjet_fast.config.audit import AuditConfig
from workjet_fast.context import RequestContext


def record(i: int, **kw: Any) -> dict[str, Any]:
    ctx = RequestContext(request_id=f"req-{i}", key_id="k1", requested_model="gpt-4o-mini", path="/v1/chat/completions")
    ctx.finish(200)
    return ctx.record() | kw


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `cond()` holds; the timeout only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def cfg_for(tmp_path: Path, **kw: Any) -> AuditConfig:
    return replace(AuditConfig(spill_path=str(tmp_path / "spill" / "audit-spill.jsonl"), flush_interval=0.05), **kw)


def rows_in(url: str) -> list[str]:
    store = AuditStore.open(url)
    try:
        return [r["request_id"] for r in store.export(Filters())]
    finally:
        store.close()


def verified(url: str) -> bool:
    store = AuditStore.open(url)
    try:
        report = verify(store)
        return report.ok
    finally:
        store.close()


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_url(request.param, tmp_path) as u:
        yield u


def test_close_flushes_every_queued_record(tmp_path: Path, url: str) -> None:
    log = AuditLog.open(cfg_for(tmp_path, flush_interval=60.0, batch_size=10_000), url)
    log.start()
    for i in range(1234):
        log.submit(record(i))
    assert log.close() is True
    st = log.stats()
    assert (st["queued"], st["written"], st["spilled"], st["dropped"], st["queue_depth"]) == (1234, 1234, 0, 0, 0)
    assert sorted(rows_in(url)) == sorted(f"req-{i}" for i in range(1234))
    assert verified(url)
    store = AuditStore.open(url)
    assert [(c.kind, c.seq) for c in store.checkpoints()] == [("periodic", 1234)]  # the final checkpoint
    store.close()


def test_several_processes_write_one_database(tmp_path: Path, url: str) -> None:
    logs = [AuditLog.open(cfg_for(tmp_path, batch_size=7), url) for _ in range(3)]
    for log in logs:
        log.start()

    def load(n: int, log: AuditLog) -> None:
        for i in range(200):
            log.submit(record(n * 1000 + i))

    threads = [threading.Thread(target=load, args=(n, log)) for n, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        assert log.close()
    assert len(rows_in(url)) == 600 and len(set(rows_in(url))) == 600
    store = AuditStore.open(url)
    report = verify(store)
    store.close()
    assert report.ok and report.chains == 3


def test_database_down_then_back_spills_and_replays(tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")  # the database cannot be opened
    url = f"sqlite:///{blocker}/audit.db"
    log = AuditLog.open(cfg_for(tmp_path), url)
    log.start()  # does not raise: records spill until the database returns
    for i in range(100):
        log.submit(record(i))
    wait_for(lambda: log.stats()["spilled"] == 100)
    assert log.stats()["written"] == 0
    spill = tmp_path / "spill" / f"audit-spill.{log.chain_id}.jsonl"
    assert len(spill.read_bytes().splitlines()) == 100

    blocker.unlink()
    blocker.mkdir()
    for i in range(100, 150):
        log.submit(record(i))
    wait_for(lambda: log.stats()["written"] + log.stats()["replayed"] == 150)
    assert log.close()
    st = log.stats()
    assert st["dropped"] == 0 and st["replayed"] == st["spilled"] >= 100
    assert sorted(rows_in(url)) == sorted(f"req-{i}" for i in range(150))
    assert verified(url)
    assert not spill.exists()  # emptied by the replay, removed at close


def test_full_queue_spills_instead_of_dropping(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    log = AuditLog.open(cfg_for(tmp_path, queue_size=10, batch_size=5), url)
    for i in range(25):  # the writer is not running yet: the queue fills up
        log.submit(record(i))
    st = log.stats()
    assert (st["queued"], st["queue_depth"], st["spilled"], st["dropped"]) == (25, 10, 15, 0)
    log.start()
    assert log.close()
    assert log.stats()["replayed"] == 15
    assert sorted(rows_in(url)) == sorted(f"req-{i}" for i in range(25))
    assert verified(url)


def test_orphan_spill_file_is_replayed_without_duplicates(tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("x")
    url = f"sqlite:///{blocker}/audit.db"
    first = AuditLog.open(cfg_for(tmp_path), url)
    first.start()
    for i in range(20):
        first.submit(record(i))
    assert first.close()
    assert first.stats()["spilled"] == 20
    (orphan,) = (tmp_path / "spill").iterdir()
    backup = tmp_path / "orphan-copy"
    shutil.copy(orphan, backup)

    blocker.unlink()
    blocker.mkdir()
    second = AuditLog.open(cfg_for(tmp_path), url)
    second.start()
    wait_for(lambda: second.stats()["replayed"] == 20)
    assert second.close()
    assert not orphan.exists()

    shutil.copy(backup, orphan)  # as if the replaying process died before removing the file
    third = AuditLog.open(cfg_for(tmp_path), url)
    third.start()
    wait_for(lambda: third.stats()["replayed"] == 20)
    assert third.close()
    assert sorted(rows_in(url)) == sorted(f"req-{i}" for i in range(20))
    assert verified(url)


def test_live_spill_file_is_not_taken_by_another_process(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "audit-spill.live.jsonl")
    spill.append([], fsync=False)
    assert lock_orphan(spill.path) is None
    spill.close()
    fh = lock_orphan(spill.path)
    assert fh is None  # an empty spill file is removed at close
    assert not spill.path.exists()


def test_unreachable_postgres_spills(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    log = AuditLog.open(cfg_for(tmp_path), url)
    log.start()
    for i in range(30):
        log.submit(record(i))
    assert log.close()
    st = log.stats()
    assert (st["spilled"], st["written"], st["dropped"]) == (30, 0, 0)
    (spill,) = (tmp_path / "spill").iterdir()
    rows, _ = read_rows(spill.read_bytes())
    assert [r.request_id for r in rows] == [f"req-{i}" for i in range(30)]
    assert [r.seq for r in rows] == list(range(1, 31))


def test_torn_last_line_is_left_for_later() -> None:
    line = b'["c",1,"r",1.0,null,null,null,null,200,"{}","' + b"0" * 64 + b'","' + b"1" * 64 + b'"]\n'
    rows, used = read_rows(line + line[:20])
    assert [r.seq for r in rows] == [1] and used == len(line)


def test_submit_never_raises(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    log = AuditLog.open(cfg_for(tmp_path), url)
    log.start()
    log.submit({"request_id": "odd", "attempts": [object()], "started_at": "yesterday", "extra": object()})
    log.submit({"request_id": None})
    assert log.close()
    assert log.stats()["written"] == 2
    got = rows_in(url)
    assert "odd" in got and len(got) == 2


def test_submit_never_raises_even_when_no_minimal_record_can_be_made(tmp_path: Path) -> None:
    class NoText:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    log = AuditLog.open(cfg_for(tmp_path), f"sqlite:///{tmp_path}/audit.db")
    log.start()
    log.submit({"request_id": NoText()})  # `normalise` fails, and so does the minimal record it falls back to
    log.submit({"request_id": "after"})
    assert log.close()
    assert log.stats()["written"] == 1
    assert log._writer is not None and log._writer.errors == 1


def test_a_record_that_cannot_be_hashed_is_kept_in_minimal_form_and_leaves_no_gap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    log = AuditLog.open(cfg_for(tmp_path, flush_interval=60.0), url)
    log.start()
    cols = ("req-bad", 1_700_000_000.0, "k1", None, "gpt-4o-mini", None, 200)
    log.submit(record(1))
    log.submit_prepared(cols, '{"request_id":"req-bad","user":"\ud800"}')  # a lone surrogate: no UTF-8 to hash
    log.submit(record(2))
    assert log.close()
    assert log.stats()["written"] == 3
    store = AuditStore.open(url)
    got = {r["request_id"]: r for r in store.export(Filters())}
    assert verify(store).ok  # seq 1, 2, 3 with no gap
    store.close()
    assert got["req-bad"]["error_code"] == "audit_record_malformed" and "req-1" in got and "req-2" in got


def test_hostile_values_are_stored_on_both_engines(tmp_path: Path, url: str) -> None:
    log = AuditLog.open(cfg_for(tmp_path), url)
    log.start()
    nasty = "a\x00b\ud800c\u2028"
    log.submit(record(1, key_name=nasty, user=nasty, path=nasty, requested_model=nasty))
    log.submit(
        record(
            2, status=2**80, prompt_tokens=-1, completion_tokens=2**70, latency_ms=float("nan"), started_at=float("inf")
        )
    )
    log.submit({"request_id": nasty, "status": 200})
    assert log.close()
    assert log.stats()["written"] == 3 and log.stats()["spilled"] == 0
    store = AuditStore.open(url)
    got = {r["request_id"]: r for r in store.export(Filters())}
    assert verify(store).ok
    store.close()
    assert got["req-1"]["key_name"] == "a\ufffdb?c\u2028"
    assert got["req-2"]["status"] is None and got["req-2"]["completion_tokens"] is None
    assert got["req-2"]["latency_ms"] is None and got["req-2"]["started_at"] == got["req-2"]["ended_at"]
    assert len(got) == 3


def test_a_row_the_database_refuses_does_not_hold_back_the_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    store = AuditStore.open(url)
    store.migrate()
    store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.request_id = 'req-4'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    log = AuditLog.open(cfg_for(tmp_path, flush_interval=60.0), url)
    log.start()
    for i in range(10):
        log.submit(record(i))
    assert log.close()
    st = log.stats()
    assert (st["written"], st["dropped"], st["spilled"]) == (9, 1, 0)
    report = verify(store)
    store.close()
    assert [(p.kind, p.seq) for p in report.problems] == [("deleted", 5)]  # the loss is visible, and where


def test_bodies_only_when_enabled(tmp_path: Path) -> None:
    for store_bodies in (False, True):
        url = f"sqlite:///{tmp_path}/bodies-{store_bodies}.db"
        log = AuditLog.open(cfg_for(tmp_path, store_bodies=store_bodies), url)
        log.start()
        log.submit(record(1, request_body={"messages": "[REDACTED]"}, api_key="sk-never"))
        assert log.close()
        store = AuditStore.open(url)
        (rec,) = store.export(Filters())
        store.close()
        assert ("request_body" in rec) is store_bodies
        assert "api_key" not in rec


def test_retention_prunes_old_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    log = AuditLog.open(cfg_for(tmp_path, retention_days=1, prune_interval=0.05), url)
    log.start()
    old = time.time() - 3 * 86400
    for i in range(10):
        log.submit(record(i, started_at=old + i))
    for i in range(10, 15):
        log.submit(record(i))
    wait_for(lambda: len(rows_in(url)) == 5)
    assert log.close()
    assert sorted(rows_in(url)) == [f"req-{i}" for i in range(10, 15)]
    assert verified(url)


def test_disabled_audit_is_a_no_op(tmp_path: Path) -> None:
    log = AuditLog.open(cfg_for(tmp_path, enabled=False), f"sqlite:///{tmp_path}/audit.db")
    log.start()
    log.submit(record(1))
    assert log.close()
    assert set(log.stats().values()) == {0}
    assert not (tmp_path / "audit.db").exists()
