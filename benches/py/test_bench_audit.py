"""Audit and metrics on the request path, and audit throughput, each against a baseline in the same run.

- `submit`: `AuditLog.submit()` with the writer thread running (SQLite), vs a no-op function of the same shape.
- `observe`: `Metrics.observe_request()` vs the same no-op.
- throughput: submit `N` records and close (every record committed): SQLite and PostgreSQL; records/s goes to
  `extra_info`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.test_audit_store import ENGINES, fresh_url
from workjet_fast.audit import AuditLog
from workjet_fast.config.audit import AuditConfig
from workjet_fast.context import Attempt, RequestContext
from workjet_fast.metrics import Metrics

N = 20_000
OPS = 1000


def make_record(i: int) -> dict[str, Any]:
    ctx = RequestContext(request_id=f"req-{i}", key_id="k1", key_name="team", requested_model="gpt-4o-mini")
    ctx.served_by = "fake/upstream-mini"
    ctx.attempts.append(Attempt("fake/upstream-mini", "ok", 200, 120.0))
    ctx.prompt_tokens, ctx.completion_tokens = 42, 128
    ctx.finish(200)
    return ctx.record()


def noop(record: dict[str, Any]) -> None:
    return None


def noop_observe(*args: Any) -> None:
    return None


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Iterator[AuditLog]:
    cfg = AuditConfig(spill_path=str(tmp_path / "spill.jsonl"), queue_size=10_000_000)
    log = AuditLog.open(cfg, f"sqlite:///{tmp_path}/audit.db")
    log.start()
    yield log
    assert log.close()


def _per_op(benchmark: BenchmarkFixture, fn: Any, *args: Any) -> None:
    def batch() -> None:
        for _ in range(OPS):
            fn(*args)

    benchmark.pedantic(batch, rounds=30, warmup_rounds=2)
    benchmark.extra_info["ops_per_round"] = OPS


@pytest.mark.benchmark(group="audit-submit")
def test_submit_baseline_noop(benchmark: BenchmarkFixture) -> None:
    _per_op(benchmark, noop, make_record(0))


@pytest.mark.benchmark(group="audit-submit")
def test_submit(benchmark: BenchmarkFixture, sqlite_log: AuditLog) -> None:
    _per_op(benchmark, sqlite_log.submit, make_record(0))
    assert sqlite_log.stats()["dropped"] == 0


@pytest.mark.benchmark(group="metrics-observe")
def test_observe_baseline_noop(benchmark: BenchmarkFixture) -> None:
    _per_op(benchmark, noop_observe, 200, "gpt-4o-mini", "standard", "fake/upstream-mini", 0.3, 0.25, 42, 128)


@pytest.mark.benchmark(group="metrics-observe")
def test_observe_request(benchmark: BenchmarkFixture) -> None:
    m = Metrics()
    _per_op(benchmark, m.observe_request, 200, "gpt-4o-mini", "standard", "fake/upstream-mini", 0.3, 0.25, 42, 128)
    assert b"workjet_requests_total" in m.render()


@pytest.mark.benchmark(group="audit-throughput")
@pytest.mark.parametrize("engine", ENGINES)
def test_throughput(benchmark: BenchmarkFixture, engine: str, tmp_path: Path) -> None:
    records = [make_record(i) for i in range(N)]

    def run() -> int:
        with fresh_url(engine, tmp_path) as url:
            cfg = replace(AuditConfig(spill_path=str(tmp_path / "spill.jsonl")), queue_size=N + 1)
            log = AuditLog.open(cfg, url)
            log.start()
            for r in records:
                log.submit(dict(r))
            assert log.close()
            return log.stats()["written"]

    written = benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    assert written == N
    benchmark.extra_info["records_per_round"] = N
    if benchmark.stats is not None:
        benchmark.extra_info["records_per_s"] = round(N / benchmark.stats.stats.median)
