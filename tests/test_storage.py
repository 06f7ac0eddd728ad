"""storage/ + KeyStore on SQLite and PostgreSQL: create, list, revoke, look-ups; idempotent migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_DSN
from workjet_fast.auth import KeyStore, hash_key
from workjet_fast.storage import Database, StorageError, open_database
from workjet_fast.storage.migrations import MIGRATIONS


def _pg_url(schema: str) -> str:
    sep = "&" if "?" in PG_DSN else "?"
    return f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_admin() -> Iterator[Database]:
    admin = open_database(PG_DSN)
    try:
        admin.ping()
    except StorageError as e:
        admin.close()
        pytest.skip(f"PostgreSQL unreachable at {PG_DSN} (set WORKJET_TEST_PG_DSN): {e}")
    yield admin
    admin.close()


@pytest.fixture
def pg_db(pg_admin: Database) -> Iterator[Database]:
    """A handle on a fresh schema (search_path set in the DSN), dropped afterwards."""
    schema = "wj_test_" + secrets.token_hex(6)
    pg_admin.execute(f"CREATE SCHEMA {schema}")
    d = open_database(_pg_url(schema))
    try:
        yield d
    finally:
        d.close()
        pg_admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_db")
        return
    d = open_database(f"sqlite:///{tmp_path}/store.db")
    yield d
    d.close()


def test_migrations_are_idempotent(db: Database) -> None:
    first = db.migrate()
    assert first == [m.version for m in MIGRATIONS]
    assert db.migrate() == []
    assert db.migrate() == []
    rows = db.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == first


def test_migrations_from_a_second_handle(db: Database) -> None:
    db.migrate()
    other = Database(db.url)
    try:
        assert other.migrate() == []
    finally:
        other.close()


@pytest.mark.postgres
def test_postgres_schema_is_isolated(pg_db: Database) -> None:
    db = pg_db
    db.migrate()
    (schema,) = db.query("SELECT current_schema()")[0]
    assert schema.startswith("wj_test_")
    (n,) = db.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = ?", (schema,))[0]
    assert n >= 3


def test_keystore_lifecycle(db: Database) -> None:
    db.migrate()
    store = KeyStore(db)
    assert store.list() == [] and store.active_by_hash() == {}
    k1, r1 = store.create("one")
    k2, r2 = store.create("two", models=["gpt-4o-mini"], tiers=["premium"], limits={"rpm": 3, "tpm": 1000})
    assert [r.name for r in store.list()] == ["one", "two"]
    got = store.get(r2.id)
    assert got is not None
    assert got.models == ("gpt-4o-mini",) and got.tiers == ("premium",) and got.limits == {"rpm": 3, "tpm": 1000}
    assert store.get("key_nope") is None

    active = store.active_by_hash()
    assert set(active) == {hash_key(k1), hash_key(k2)}
    assert active[hash_key(k1)].id == r1.id
    found = store.active_by_key_hash(hash_key(k2))
    assert found is not None and found.id == r2.id
    assert store.active_by_key_hash(hash_key("wj_live_" + "q" * 40)) is None

    assert store.revoke(r1.id)
    assert not store.revoke(r1.id)
    assert not store.revoke("key_nope")
    assert set(store.active_by_hash()) == {hash_key(k2)}
    assert store.active_by_key_hash(hash_key(k1)) is None
    listed = {r.id: r for r in store.list()}
    assert listed[r1.id].revoked_at is not None and listed[r2.id].revoked_at is None
    assert [r.id for r in store.list(include_revoked=False)] == [r2.id]

    assert store.set_limits(r2.id, {"concurrency": 2})
    assert store.get(r2.id).limits == {"concurrency": 2}  # type: ignore[union-attr]
    assert not store.set_limits("key_nope", {})


def test_no_plaintext_key_stored(db: Database) -> None:
    db.migrate()
    store = KeyStore(db)
    key, rec = store.create("secret")
    rows = db.query("SELECT * FROM api_keys")
    assert len(rows) == 1
    flat = " ".join(str(v) for v in rows[0])
    assert key not in flat and key[len("wj_live_") :] not in flat
    assert hash_key(key) in flat


def test_transaction_rolls_back(db: Database) -> None:
    db.migrate()
    # any failure inside the block rolls back and surfaces as StorageError
    with pytest.raises(StorageError, match="boom"):
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                ("key_x", "x", "p", "h", 0.0, 0.0),
            )
            raise RuntimeError("boom")
    assert db.query("SELECT count(*) FROM api_keys")[0][0] == 0


def test_sqlite_keeps_a_small_page_cache(tmp_path: Path) -> None:
    # 512 KiB, not SQLite's 2 MiB default: part of each worker's resident memory (benches/RESULTS.md).
    d = open_database(f"sqlite:///{tmp_path}/cache.db")
    try:
        assert d.query("PRAGMA cache_size") == [(-512,)]
        assert d.query("PRAGMA journal_mode") == [("wal",)]
    finally:
        d.close()


def test_bad_sql_is_storage_error_and_handle_recovers(db: Database) -> None:
    db.migrate()
    with pytest.raises(StorageError):
        db.query("SELECT * FROM no_such_table")
    db.ping()  # reconnects after the failed statement


def test_unreachable_postgres_is_storage_error() -> None:
    from tests.fakes.openai_upstream import free_port

    d = open_database(f"postgresql://u:secretpw@127.0.0.1:{free_port()}/x")
    with pytest.raises(StorageError) as info:
        d.ping()
    assert "secretpw" not in str(info.value)  # the password is redacted
    d.close()
