"""API keys: generate, hash, store, cache, revoke.

A key is ``wj_live_`` + 40 base62 characters from the OS CSPRNG (238 bits). Only its SHA-256 is stored
(a key has too much entropy for a slow hash to add anything), with an id, a name, a display prefix and
what it may use. Requests are authenticated from an in-process cache of the active keys: no storage
round trip per request. Every process reloads the whole table every `auth.refresh_seconds` (default 2 s,
at most 5 s), which bounds how long a revoked key keeps working in any process. An unknown key triggers
one indexed look-up of that hash, at most 20 a second per process, so a freshly created key works at
once without letting a flood of random keys reach the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from workjet_fast.errors import Unauthorized
from workjet_fast.storage import Database

__all__ = ["KEY_PREFIX", "KeyCache", "KeyRecord", "KeyStore", "generate_key", "hash_key"]

log = logging.getLogger("workjet.auth")

KEY_PREFIX = "wj_live_"
_ALPHABET = string.ascii_letters + string.digits
_BODY_LEN = 40
_DISPLAY = len(KEY_PREFIX) + 6


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def well_formed(key: str) -> bool:
    body = key[len(KEY_PREFIX) :]
    return key.startswith(KEY_PREFIX) and len(body) >= 32 and len(key) <= 128 and body.isalnum() and body.isascii()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    models: tuple[str, ...] = ()  # empty: every model
    tiers: tuple[str, ...] = ()  # empty: every tier
    limits: dict[str, Any] = field(default_factory=dict)

    def may_use(self, public_id: str, is_tier: bool) -> bool:
        if not self.models and not self.tiers:
            return True
        return public_id in (self.tiers if is_tier else self.models)

    def public(self) -> dict[str, Any]:
        """What may be shown: never the key or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "models": list(self.models),
            "tiers": list(self.tiers),
            "limits": self.limits,
        }


_COLUMNS = "id, name, prefix, created_at, revoked_at, models, tiers, limits"


def _record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        name=row[1],
        prefix=row[2],
        created_at=row[3],
        revoked_at=row[4],
        models=tuple(orjson.loads(row[5])),
        tiers=tuple(orjson.loads(row[6])),
        limits=orjson.loads(row[7]),
    )


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        models: list[str] | None = None,
        tiers: list[str] | None = None,
        limits: dict[str, Any] | None = None,
    ) -> tuple[str, KeyRecord]:
        key = generate_key()
        now = time.time()
        rec = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=name,
            prefix=key[:_DISPLAY],
            created_at=now,
            models=tuple(models or ()),
            tiers=tuple(tiers or ()),
            limits=dict(limits or {}),
        )
        self.db.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, models, tiers, limits, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                name,
                rec.prefix,
                hash_key(key),
                now,
                orjson.dumps(list(rec.models)).decode(),
                orjson.dumps(list(rec.tiers)).decode(),
                orjson.dumps(rec.limits).decode(),
                now,
            ),
        )
        return key, rec

    def list(self, include_revoked: bool = True) -> list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        return [_record(r) for r in self.db.query(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at")]

    def get(self, key_id: str) -> KeyRecord | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _record(rows[0]) if rows else None

    def revoke(self, key_id: str) -> bool:
        now = time.time()
        n = self.db.execute(
            "UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL", (now, now, key_id)
        )
        return n > 0

    def set_limits(self, key_id: str, limits: dict[str, Any]) -> bool:
        n = self.db.execute(
            "UPDATE api_keys SET limits = ?, updated_at = ? WHERE id = ?",
            (orjson.dumps(limits).decode(), time.time(), key_id),
        )
        return n > 0

    def active_by_key_hash(self, key_hash: str) -> KeyRecord | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return _record(rows[0]) if rows else None

    def active_by_hash(self) -> dict[str, KeyRecord]:
        rows = self.db.query(f"SELECT key_hash, {_COLUMNS} FROM api_keys WHERE revoked_at IS NULL")
        return {r[0]: _record(r[1:]) for r in rows}


class KeyCache:
    """The in-process view of the active keys; `authenticate` never touches storage."""

    def __init__(self, store: KeyStore, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._by_hash: dict[str, KeyRecord] = {}
        self._loaded_at = 0.0
        # Look-ups of unknown keys: a token bucket of 20, refilled at 20 a second.
        self._miss_budget = 20.0
        self._miss_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.healthy = False

    def load(self) -> None:
        self._by_hash = self.store.active_by_hash()
        self._loaded_at = time.monotonic()
        self.healthy = True

    async def reload(self) -> None:
        async with self._reload_lock:
            try:
                self._by_hash = await asyncio.to_thread(self.store.active_by_hash)
                self._loaded_at = time.monotonic()
                self.healthy = True
            except Exception as e:
                # Keep serving with the last good view; readiness reports the storage problem.
                self.healthy = False
                log.warning("key reload failed: %s", e)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.reload()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _take_miss_budget(self) -> bool:
        now = time.monotonic()
        self._miss_budget = min(20.0, self._miss_budget + (now - self._miss_at) * 20.0)
        self._miss_at = now
        if self._miss_budget < 1.0:
            return False
        self._miss_budget -= 1.0
        return True

    @staticmethod
    def _checked(key: str | None) -> str:
        if not key:
            raise Unauthorized("Missing API key: send `Authorization: Bearer wj_live_...` or `x-api-key`.")
        if not well_formed(key):
            raise Unauthorized("Malformed API key: keys look like wj_live_ followed by 40 letters and digits.")
        return key

    def cached(self, key: str | None) -> KeyRecord | None:
        """The record of a known key without awaiting anything (the hot path); None when the key is not in the
        cache (then `authenticate` looks it up). A missing or malformed key raises `Unauthorized` here."""
        return self._by_hash.get(hash_key(self._checked(key)))

    def by_hash(self, key_hash: str) -> KeyRecord | None:
        """The cached record of the key with this `hash_key`, if any (no checks: the caller made the hash of a
        well-formed key)."""
        return self._by_hash.get(key_hash)

    async def authenticate(self, key: str | None) -> KeyRecord:
        h = hash_key(self._checked(key))
        rec = self._by_hash.get(h)
        if rec is None and self._take_miss_budget():
            try:
                rec = await asyncio.to_thread(self.store.active_by_key_hash, h)
            except Exception as e:
                log.warning("key look-up failed: %s", e)
            if rec is not None:
                self._by_hash[h] = rec
        if rec is None:
            raise Unauthorized("Invalid API key: unknown or revoked.")
        return rec
