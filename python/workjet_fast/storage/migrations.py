"""Versioned schema migrations, applied in order at start-up or by `workjet db migrate`.

Append new migrations at the end; never edit one that has shipped. A migration is written once, in
SQLite's types; PostgreSQL's statements are derived from it (or given in `postgres_sql` when they must
differ). `schema_migrations` records what was applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres_sql: str | None = None

    @property
    def postgres(self) -> str:
        """The same statements in PostgreSQL's types: REAL is DOUBLE PRECISION, sequence numbers are BIGINT."""
        if self.postgres_sql is not None:
            return self.postgres_sql
        sql = self.sqlite.replace(" REAL", " DOUBLE PRECISION")
        return re.sub(r"\b(seq|count) INTEGER\b", r"\1 BIGINT", sql)


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "api keys",
        sqlite="""
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL,
            models TEXT NOT NULL DEFAULT '[]',
            tiers TEXT NOT NULL DEFAULT '[]',
            limits TEXT NOT NULL DEFAULT '{}',
            updated_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "audit log: hash-chained records and checkpoints",
        sqlite="""
        CREATE TABLE audit_log (
            chain_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            request_id TEXT NOT NULL,
            ts REAL NOT NULL,
            key_id TEXT,
            key_name TEXT,
            model TEXT,
            served_by TEXT,
            status INTEGER,
            record TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (chain_id, seq)
        );
        CREATE INDEX audit_log_ts ON audit_log (ts, chain_id, seq);
        CREATE INDEX audit_log_key ON audit_log (key_id, ts);
        CREATE INDEX audit_log_request ON audit_log (request_id);
        CREATE TABLE audit_checkpoints (
            chain_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            head_hash TEXT NOT NULL,
            count INTEGER NOT NULL,
            created_at REAL NOT NULL,
            mac TEXT NOT NULL,
            PRIMARY KEY (chain_id, seq, kind)
        );
        """,
    ),
]
