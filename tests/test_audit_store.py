"""AuditStore on SQLite and PostgreSQL: idempotent inserts, filters, keyset pagination, export, pruning.

`fresh_url`/`fresh_store` (one fresh database per test: a SQLite file, or a PostgreSQL schema dropped
afterwards) are shared by the other audit tests, which import them from here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from workjet_fast.audit import store as store_module
from workjet_fast.audit.chain import Chain, make_checkpoint, verify
from workjet_fast.audit.record import normalise
from workjet_fast.audit.store import AuditStore, Filters, InvalidCursor, parse_status, parse_time

PG_DSN = os.environ.get("WORKJET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_schema() -> tuple[str, str]:
    import psycopg

    schema = f"audit_t_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {e}")
    sep = "&" if "?" in PG_DSN else "?"
    return schema, f"{PG_DSN}{sep}options={quote(f'-csearch_path={schema}')}"


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def fresh_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/audit.db"
        return
    schema, url = _pg_schema()
    try:
        yield url
    finally:
        _drop_schema(schema)


@contextmanager
def fresh_store(kind: str, tmp_path: Path) -> Iterator[AuditStore]:
    with fresh_url(kind, tmp_path) as url:
        s = AuditStore.open(url)
        s.migrate()
        try:
            yield s
        finally:
            s.close()


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    with fresh_store(request.param, tmp_path) as s:
        yield s


def rec(i: int, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": f"req-{i:05d}",
        "started_at": 1_700_000_000.0 + i,
        "key_id": "k1" if i % 2 else "k2",
        "key_name": "team-a" if i % 2 else "team-b",
        "requested_model": "gpt-4o-mini" if i % 3 else "premium",
        "served_by": "fake/upstream-mini",
        "status": 200 if i % 5 else 429,
        "latency_ms": 12.5,
    }
    base.update(kw)
    return normalise(base)


def fill(store: AuditStore, n: int, chain_id: str = "chain-a") -> Chain:
    chain = Chain(chain_id)
    rows = chain.link(rec(i) for i in range(n))
    store.insert(rows)
    return chain


def test_insert_is_idempotent(store: AuditStore) -> None:
    chain = Chain("c")
    rows = chain.link(rec(i) for i in range(10))
    store.insert(rows)
    store.insert(rows[3:])  # a replay after a crash
    assert store.count() == 10
    assert verify(store).ok


def test_batches_of_any_size_take_a_few_statement_sizes(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection caches one prepared statement per distinct SQL text, ~2.4 KB per row on SQLite: batches of every
    # size must not each get their own (with sizes 1 to 128 a worker's memory grew by ~20 MB).
    sizes: list[int] = []
    real = store_module._insert_rows_sql
    monkeypatch.setattr(store_module, "_insert_rows_sql", lambda n: sizes.append(n) or real(n))
    chain = Chain("c")
    total = 0
    for n in [*range(1, 40), 127, 128, 300]:
        store.insert(chain.link(rec(total + i) for i in range(n)))
        total += n
    assert store.count() == total and verify(store).ok
    assert set(sizes) <= {1, 2, 4, 8, 16, 32, 64, 128, 256}
    # 300 rows: the largest sizes first (64 rows at most per statement on SQLite before 3.32)
    assert sizes[-4:] == [256, 32, 8, 4] if store._chunk == 256 else sizes[-7:] == [64, 64, 64, 64, 32, 8, 4]


def test_filters(store: AuditStore) -> None:
    fill(store, 30)
    got, _ = store.query(Filters(key="k1"), limit=100)
    assert {r["key_id"] for r in got} == {"k1"} and len(got) == 15
    got, _ = store.query(Filters(key="team-b"), limit=100)
    assert {r["key_id"] for r in got} == {"k2"}
    got, _ = store.query(Filters(status="4xx"), limit=100)
    assert [r["request_id"] for r in got] == [f"req-{i:05d}" for i in (25, 20, 15, 10, 5, 0)]
    got, _ = store.query(Filters(model="premium", status="200"), limit=100)
    assert all(r["requested_model"] == "premium" and r["status"] == 200 for r in got) and len(got) == 8
    got, _ = store.query(Filters(model="fake/upstream-mini"), limit=100)
    assert len(got) == 30
    got, _ = store.query(Filters(since=1_700_000_010.0, until=1_700_000_012.0), limit=100)
    assert [r["request_id"] for r in got] == ["req-00011", "req-00010"]
    got, _ = store.query(Filters(request_id="req-00007"), limit=100)
    assert [(r["chain_id"], r["seq"]) for r in got] == [("chain-a", 8)]


def test_pagination_visits_every_record_once(store: AuditStore) -> None:
    fill(store, 23, "chain-a")
    fill(store, 17, "chain-b")  # same timestamps in two chains: the cursor must break ties
    seen: list[tuple[str, int]] = []
    cursor: str | None = None
    while True:
        page, cursor = store.query(Filters(), limit=7, cursor=cursor)
        seen += [(r["chain_id"], r["seq"]) for r in page]
        if cursor is None:
            break
    assert len(seen) == 40 and len(set(seen)) == 40
    assert seen[0][1] == 23  # newest first


def test_bad_cursor(store: AuditStore) -> None:
    with pytest.raises(InvalidCursor):
        store.query(Filters(), cursor="not-a-cursor")


def test_export_oldest_first_in_pages(store: AuditStore) -> None:
    fill(store, 25)
    got = [r["request_id"] for r in store.export(Filters(), page=4)]
    assert got == [f"req-{i:05d}" for i in range(25)]


def test_prune_keeps_the_chain_verifiable(store: AuditStore) -> None:
    chain = fill(store, 20)
    store.add_checkpoint(make_checkpoint("", chain.chain_id, 20, "periodic", chain.head, 1.0))
    deleted = store.prune(older_than=1_700_000_008.0)
    assert deleted == 8
    assert [r.seq for r in store.iter_chain("chain-a")][:1] == [9]
    report = verify(store)
    assert report.ok, report.problems
    assert store.prune(older_than=1_700_000_008.0) == 0  # nothing more to do


def test_prune_a_whole_chain_leaves_an_anchor(store: AuditStore) -> None:
    fill(store, 5)
    assert store.prune(older_than=2_000_000_000.0) == 5
    assert store.count() == 0
    assert [(c.kind, c.seq) for c in store.checkpoints()] == [("anchor", 5)]
    assert verify(store).ok


def test_parse_status() -> None:
    assert parse_status("429") == (429, 429)
    assert parse_status("5xx") == (500, 599)
    with pytest.raises(ValueError):
        parse_status("abc")


def test_parse_time() -> None:
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000.0
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError):
        parse_time("yesterday")
