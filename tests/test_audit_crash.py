"""The durability promise of docs/audit.md under SIGKILL: a writer process under load is killed; after a
restart (which replays its spill file), every record it had counted as `written` or `spilled` is in the
database, exactly once, and the chains verify.

The child reports its counters to a progress file after every 100 submits; a line in the page cache
survives SIGKILL, so the last complete line is a lower bound of what the process had made durable.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_audit_store import ENGINES, fresh_url
from workjet_fast.audit import AuditLog, verify
from workjet_fast.audit.store import AuditStore, Filters
from workjet_fast.config.audit import AuditConfig

pytestmark = pytest.mark.slow

CHILD = """
import sys, time
from workjet_fast.audit import AuditLog
from workjet_fast.config.audit import AuditConfig

url, spill, progress, queue_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
log = AuditLog.open(AuditConfig(spill_path=spill, flush_interval=0.05, batch_size=200, queue_size=queue_size), url)
log.start()
out = open(progress, "w")
i = 0
while True:
    for _ in range(100):
        log.submit({"request_id": f"r{i}", "started_at": time.time(), "status": 200, "key_id": "k"})
        i += 1
    st = log.stats()
    out.write(f"{i} {st['written']} {st['spilled']} {st['dropped']}\\n")
    out.flush()
    if st["queue_depth"] > queue_size // 2:
        time.sleep(0.001)  # a busy gateway, not a tight loop that starves the writer thread
"""


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_url(request.param, tmp_path) as u:
        yield u


def progress(path: Path) -> tuple[int, int, int, int]:
    lines = [ln for ln in path.read_text().split("\n")[:-1] if ln]  # complete lines only
    if not lines:
        return 0, 0, 0, 0
    a, b, c, d = (int(x) for x in lines[-1].split())
    return a, b, c, d


def run_and_kill(url: str, tmp_path: Path, queue_size: int, until: int) -> tuple[int, int, int, int]:
    prog = tmp_path / "progress.txt"
    prog.touch()
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(spill), str(prog), str(queue_size)])
    try:
        deadline = time.monotonic() + 60  # bounds a hung test only
        while progress(prog)[1] + progress(prog)[2] < until:
            assert child.poll() is None, "the writer process died"
            assert time.monotonic() < deadline, "the writer process made no progress"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return progress(prog)


def restart_and_read(url: str, tmp_path: Path) -> list[str]:
    log = AuditLog.open(AuditConfig(spill_path=str(tmp_path / "spill" / "audit-spill.jsonl")), url)
    log.start()
    assert log.close()
    store = AuditStore.open(url)
    try:
        report = verify(store)
        assert report.ok, report.problems
        return [r["request_id"] for r in store.export(Filters())]
    finally:
        store.close()


def test_sigkill_with_a_healthy_database(url: str, tmp_path: Path) -> None:
    submitted, written, spilled, dropped = run_and_kill(url, tmp_path, queue_size=100_000, until=5000)
    got = restart_and_read(url, tmp_path)
    assert len(got) == len(set(got))  # no duplicates
    assert set(got) <= {f"r{i}" for i in range(submitted + 100)}
    # The queue never overflowed, so the writer took records in order: the first `written` are durable.
    assert spilled == 0 and dropped == 0
    assert {f"r{i}" for i in range(written)} <= set(got)


def test_sigkill_with_a_full_queue(url: str, tmp_path: Path) -> None:
    submitted, written, spilled, dropped = run_and_kill(url, tmp_path, queue_size=50, until=5000)
    got = restart_and_read(url, tmp_path)
    assert len(got) == len(set(got))
    assert dropped == 0 and spilled > 0  # the overflow path was taken
    assert len(got) >= written + spilled


def test_sigkill_while_the_database_is_down(tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker}/audit.db"
    submitted, written, spilled, dropped = run_and_kill(url, tmp_path, queue_size=100_000, until=3000)
    assert written == 0 and dropped == 0
    blocker.unlink()
    blocker.mkdir()
    got = restart_and_read(url, tmp_path)
    assert len(got) == len(set(got))
    assert {f"r{i}" for i in range(spilled)} <= set(got)  # spilled in order by the writer
