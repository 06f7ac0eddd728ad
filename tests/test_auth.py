"""auth.py: key format, hash-only storage, the cache's authenticate (revocation, look-up of new keys)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workjet_fast.auth import KEY_PREFIX, KeyCache, KeyStore, generate_key, hash_key, well_formed
from workjet_fast.errors import Unauthorized
from workjet_fast.storage import open_database
from workjet_fast.web import api_key_from

KEY_RE = re.compile(r"wj_live_[A-Za-z0-9]{32,}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    db = open_database(f"sqlite:///{tmp_path}/keys.db")
    db.migrate()
    yield KeyStore(db)
    db.close()


def test_key_format() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for k in keys:
        assert KEY_RE.fullmatch(k), k
        assert k.startswith(KEY_PREFIX) and well_formed(k)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "wj_live_",
        "wj_live_" + "a" * 31,
        "wj_test_" + "a" * 40,
        "WJ_LIVE_" + "a" * 40,
        "wj_live_" + "a" * 39 + "-",
        "wj_live_" + "a" * 39 + "é",
        "wj_live_" + "a" * 39 + "٣",  # a non-ASCII digit is still not base62
        "wj_live_" + "a" * 200,
        " wj_live_" + "a" * 40,
    ],
)
def test_malformed_keys(key: str) -> None:
    assert not well_formed(key)


def test_minimum_well_formed_key() -> None:
    assert well_formed("wj_live_" + "a" * 32)


def test_hash_is_sha256_hex() -> None:
    h = hash_key("wj_live_" + "a" * 40)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h != hash_key("wj_live_" + "a" * 39 + "b")


def test_only_the_hash_is_stored(store: KeyStore, tmp_path: Path) -> None:
    key, rec = store.create("secret-holder", ["gpt-4o-mini"], [], {"rpm": 5})
    assert KEY_RE.fullmatch(key)
    assert rec.prefix == key[: len(KEY_PREFIX) + 6]
    store.db.close()  # checkpoint nothing lingering only in a connection
    with sqlite3.connect(tmp_path / "keys.db") as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
        cols = [d[1] for d in conn.execute("PRAGMA table_info(api_keys)")]
    conn.close()
    assert len(rows) == 1
    row = dict(zip(cols, rows[0], strict=True))
    assert row["key_hash"] == hash_key(key)
    assert all(key not in str(v) for v in row.values())
    body = key[len(KEY_PREFIX) :]
    for f in tmp_path.iterdir():
        if f.name.startswith("keys.db"):
            data = f.read_bytes()
            assert key.encode() not in data and body.encode() not in data, f.name


def test_public_record_never_shows_key_or_hash(store: KeyStore) -> None:
    key, rec = store.create("x")
    shown = repr(rec.public()) + repr([r.public() for r in store.list()])
    assert key not in shown and hash_key(key) not in shown
    assert set(rec.public()) == {"id", "name", "prefix", "created_at", "revoked_at", "models", "tiers", "limits"}


def test_may_use() -> None:
    from workjet_fast.auth import KeyRecord

    anything = KeyRecord("k1", "n", "p", 0.0)
    assert anything.may_use("m", False) and anything.may_use("t", True)
    scoped = KeyRecord("k2", "n", "p", 0.0, models=("m",), tiers=("t",))
    assert scoped.may_use("m", False) and scoped.may_use("t", True)
    assert not scoped.may_use("t", False) and not scoped.may_use("m", True) and not scoped.may_use("x", False)
    models_only = KeyRecord("k3", "n", "p", 0.0, models=("m",))
    assert not models_only.may_use("standard", True)


def test_authenticate_accepts_active_and_rejects_revoked(store: KeyStore) -> None:
    async def run() -> None:
        cache = KeyCache(store, refresh_seconds=0.1)
        key, rec = store.create("live")
        cache.load()
        assert (await cache.authenticate(key)).id == rec.id
        assert store.revoke(rec.id)
        assert not store.revoke(rec.id)  # already revoked
        await cache.reload()
        with pytest.raises(Unauthorized, match="unknown or revoked"):
            await cache.authenticate(key)

    asyncio.run(run())


def test_refresh_loop_drops_revoked_key(store: KeyStore) -> None:
    async def run() -> None:
        cache = KeyCache(store, refresh_seconds=0.05)
        key, rec = store.create("live")
        cache.load()
        cache.start()
        try:
            store.revoke(rec.id)
            for _ in range(200):
                await asyncio.sleep(0.05)
                if hash_key(key) not in cache._by_hash:
                    break
            with pytest.raises(Unauthorized):
                await cache.authenticate(key)
        finally:
            await cache.stop()

    asyncio.run(run())


def test_new_key_works_without_reload(store: KeyStore) -> None:
    async def run() -> None:
        cache = KeyCache(store)
        cache.load()
        key, rec = store.create("fresh")  # created after the load: found by the one-off look-up
        assert (await cache.authenticate(key)).id == rec.id

    asyncio.run(run())


@pytest.mark.parametrize(("key", "match"), [(None, "Missing"), ("", "Missing"), ("sk-abc", "Malformed")])
def test_authenticate_missing_and_malformed(store: KeyStore, key: str | None, match: str) -> None:
    cache = KeyCache(store)
    with pytest.raises(Unauthorized, match=match) as info:
        asyncio.run(cache.authenticate(key))
    assert info.value.status == 401 and info.value.code == "unauthorized"


def test_cached_answers_known_keys_without_awaiting_and_defers_the_rest(store: KeyStore) -> None:
    cache = KeyCache(store)
    key, rec = store.create("hot")
    cache.load()
    hit = cache.cached(key)
    assert hit is not None and hit.id == rec.id
    fresh, fresh_rec = store.create("fresh")  # not in the loaded view: `authenticate` must look it up
    assert cache.cached(fresh) is None
    assert asyncio.run(cache.authenticate(fresh)).id == fresh_rec.id
    assert (cache.cached(fresh) or rec).id == fresh_rec.id  # cached since
    store.revoke(rec.id)
    cache.load()
    assert cache.cached(key) is None  # revoked: not cached, and `authenticate` refuses it
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        asyncio.run(cache.authenticate(key))
    for bad, match in ((None, "Missing"), ("", "Missing"), ("sk-abc", "Malformed")):
        with pytest.raises(Unauthorized, match=match):
            cache.cached(bad)


def test_api_key_from_headers() -> None:
    k = "wj_live_" + "b" * 40
    assert api_key_from({"authorization": f"Bearer {k}"}) == k
    assert api_key_from({"authorization": f"bearer  {k} "}) == k
    assert api_key_from({"x-api-key": k}) == k
    assert api_key_from({"x-api-key": f" {k}\t"}) == k
    assert api_key_from({}) is None
    assert api_key_from({"authorization": f"Basic {k}"}) is None
    # an explicit Authorization header wins over x-api-key
    assert api_key_from({"authorization": "Bearer other", "x-api-key": k}) == "other"


def test_x_api_key_authenticates(store: KeyStore) -> None:
    key, rec = store.create("anthropic-style")
    cache = KeyCache(store)
    cache.load()
    assert asyncio.run(cache.authenticate(api_key_from({"x-api-key": key}))).id == rec.id


def test_several_new_keys_work_at_once_but_unknown_key_lookups_are_bounded(store: KeyStore) -> None:
    cache = KeyCache(store, refresh_seconds=2)
    cache.load()
    fresh = [store.create(f"new{i}")[0] for i in range(5)]
    calls = 0
    real = store.active_by_key_hash

    def counting(h: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(h)

    store.active_by_key_hash = counting  # type: ignore[method-assign]

    async def run() -> int:
        for key in fresh:  # back to back: each new key is looked up once and then cached
            await cache.authenticate(key)
        for key in fresh:
            await cache.authenticate(key)
        rejected = 0
        for _ in range(200):  # a flood of unknown keys reaches storage at most the bucket's size
            try:
                await cache.authenticate(generate_key())
            except Unauthorized:
                rejected += 1
        return rejected

    t0 = time.monotonic()
    assert asyncio.run(run()) == 200
    refill = 20 * (time.monotonic() - t0)
    assert 20 <= calls <= 20 + refill + 1  # the bucket's 20 (5 spent on the new keys) plus what refilled meanwhile
