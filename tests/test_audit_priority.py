"""The audit writer's CPU priority on Linux: nice 19 while it keeps up, the worker's own when it falls behind.

The event loop thread must keep its priority throughout; a writer that takes over waits for the background
one's batch, so the chain stays in order; close waits for whichever writer is current."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.test_audit_writer import record, rows_in, verified, wait_for
from workjet_fast.audit import AuditLog, writer as writer_mod
from workjet_fast.audit.store import AuditStore
from workjet_fast.audit.writer import AuditWriter
from workjet_fast.config.audit import AuditConfig

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux behaviour")


def nice_of(t: threading.Thread | None) -> int:
    assert t is not None and t.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, t.native_id)


def my_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def writer_of(log: AuditLog) -> AuditWriter:
    assert log._writer is not None
    return log._writer


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/audit.db"


def cfg(tmp_path: Path, **kw: Any) -> AuditConfig:
    spill = str(tmp_path / "spill" / "audit-spill.jsonl")
    base = AuditConfig(spill_path=spill, flush_interval=0.05, batch_size=4, background_writer=True)
    return replace(base, **kw)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(entered, gate): the first insert signals `entered` and waits for `gate`; the others run at once."""
    entered, gate = threading.Event(), threading.Event()
    real = AuditStore.insert
    calls = [0]

    def insert(self: Any, rows: Any, *a: Any, **k: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            entered.set()
            assert gate.wait(30)
        real(self, rows, *a, **k)

    monkeypatch.setattr(AuditStore, "insert", insert)
    yield entered, gate
    gate.set()


def held_in_insert(
    tmp_path: Path, url: str, entered: threading.Event, **kw: Any
) -> tuple[AuditLog, AuditWriter, threading.Thread | None]:
    """A started log whose background writer took records 0-3 as a full batch and is held inside its insert."""
    log = AuditLog.open(cfg(tmp_path, **kw), url)
    log.start()
    w = writer_of(log)
    wait_for(lambda: w._low)
    background = w._thread
    for i in range(4):  # a full batch wakes the background writer, which then hangs in its insert
        log.submit(record(i))
    assert entered.wait(30)
    return log, w, background


def test_the_writer_runs_at_nice_19_and_the_caller_keeps_its_priority(tmp_path: Path, url: str) -> None:
    mine = my_nice()
    log = AuditLog.open(cfg(tmp_path), url)
    log.start()
    w = writer_of(log)
    wait_for(lambda: w._low)
    assert nice_of(w._thread) == 19
    for i in range(3):  # under a batch: written when the interval ends
        log.submit(record(i))
    wait_for(lambda: log.stats()["written"] == 3)
    assert log.close() is True
    assert my_nice() == mine
    assert log.stats()["writer_boosts"] == 0


def test_background_writer_false_keeps_the_workers_priority(tmp_path: Path, url: str) -> None:
    log = AuditLog.open(cfg(tmp_path, background_writer=False), url)
    log.start()
    w = writer_of(log)
    log.submit(record(0))
    wait_for(lambda: log.stats()["written"] == 1)
    assert nice_of(w._thread) == my_nice() and not w._low
    assert log.close() is True


def test_a_writer_that_falls_behind_is_replaced_at_the_callers_priority(
    tmp_path: Path, url: str, gated: tuple[threading.Event, threading.Event]
) -> None:
    entered, gate = gated
    log, w, background = held_in_insert(tmp_path, url, entered, flush_interval=60.0)  # only full batches wake
    for i in range(4, 11):  # under two batches waiting: the background writer keeps its turn
        log.submit(record(i))
    assert w.boosts == 0 and w._thread is background
    log.submit(record(11))  # two batches waiting: a writer at normal priority takes over
    assert w.boosts == 1 and w._thread is not background and not w._low
    assert nice_of(w._thread) == my_nice()  # waiting for the background writer's batch, at normal priority
    assert background is not None and background.is_alive()
    closed: list[bool] = []
    closer = threading.Thread(target=lambda: closed.append(log.close()))
    closer.start()  # close while the writer that took over still waits for the background one's batch
    gate.set()
    closer.join(30)
    assert closed == [True] and not background.is_alive()
    assert sorted(rows_in(url), key=lambda r: int(r.split("-")[1])) == [f"req-{i}" for i in range(12)]
    assert verified(url)
    assert log.stats()["writer_boosts"] == 1


def test_a_writer_at_normal_priority_returns_to_the_background_when_calm(
    tmp_path: Path, url: str, gated: tuple[threading.Event, threading.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "_CALM_SECONDS", 0.2)
    entered, gate = gated
    log, w, _ = held_in_insert(tmp_path, url, entered)
    for i in range(4, 12):
        log.submit(record(i))
    took_over = w._thread
    assert w.boosts == 1 and not w._low
    gate.set()
    wait_for(lambda: w._low)  # no batch filled for _CALM_SECONDS: back to nice 19, in the same thread
    assert w._thread is took_over and nice_of(took_over) == 19
    for i in range(12, 20):
        log.submit(record(i))
    assert log.close() is True
    assert log.stats()["written"] == 20 and verified(url)


def test_when_no_thread_can_be_started_the_background_writer_carries_on(
    tmp_path: Path,
    url: str,
    gated: tuple[threading.Event, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, gate = gated
    log, w, background = held_in_insert(tmp_path, url, entered, flush_interval=60.0)

    real_start = threading.Thread.start

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    for i in range(4, 12):
        log.submit(record(i))
    assert w._thread is background and w._low and w.boosts == 0
    assert "no writer at normal priority could be started" in caplog.text
    monkeypatch.setattr(threading.Thread, "start", real_start)
    gate.set()
    assert log.close() is True
    assert log.stats()["written"] == 12 and verified(url)


def test_no_takeover_once_close_has_begun(
    tmp_path: Path, url: str, gated: tuple[threading.Event, threading.Event]
) -> None:
    entered, gate = gated
    log, w, background = held_in_insert(tmp_path, url, entered, flush_interval=60.0)
    closed: list[bool] = []
    closer = threading.Thread(target=lambda: closed.append(log.close()))
    closer.start()
    wait_for(lambda: w._closing)
    w._boost()  # as if the queue had reached two batches just now
    assert w._thread is background and w.boosts == 0
    gate.set()
    closer.join(30)
    assert closed == [True] and log.stats()["written"] == 4
