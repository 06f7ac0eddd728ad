"""Storage: SQLite by default, PostgreSQL for production; versioned migrations."""

from __future__ import annotations

from workjet_fast.storage.db import Database, StorageError, open_database

__all__ = ["Database", "StorageError", "open_database"]
