"""The audit log: one hash-chained record per request, written off the request path.

The API the application uses::

    audit = AuditLog.open(settings.audit, settings.storage_url)
    audit.start()                  # migrations (if the database is up) + the writer thread
    audit.submit(ctx.record())     # at the end of every request; non-blocking, never raises
    audit.stats()                  # {queued, written, spilled, dropped, replayed, batches, queue_depth,
                                   #  writer_boosts}
    audit.close(timeout=None)      # graceful shutdown: every queued record reaches the database or spill file

`submit()` takes ownership of the dict (do not mutate it afterwards). It never touches the database:
the record goes to a bounded in-memory queue, or, when the queue is full, to the spill file. See
docs/audit.md for the durability guarantee. Modules: `record` (fields, canonical form), `chain` (hash
chain, checkpoints, verify), `store` (tables, queries, pruning), `spill` (spill file), `writer` (queue
and thread), `cli` (`workjet audit ...`), `admin` (GET /admin/audit).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from typing import Any

from workjet_fast.audit.chain import Chain, VerifyReport, verify
from workjet_fast.audit.record import Columns, access_log_line
from workjet_fast.audit.spill import SpillFile, spill_path_for
from workjet_fast.audit.store import AuditStore, Filters
from workjet_fast.audit.writer import AuditWriter
from workjet_fast.config.audit import AuditConfig

__all__ = ["AuditLog", "AuditStore", "Filters", "VerifyReport", "access_log_line", "new_chain_id", "verify"]


def new_chain_id() -> str:
    """A chain id unique to this process instance: host, pid and a random part."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class AuditLog:
    """The audit log of one process: its chain, its writer thread and its spill file."""

    def __init__(self, cfg: AuditConfig, url: str, chain_id: str | None = None) -> None:
        self.cfg = cfg
        self.url = url
        self.chain_id = chain_id or new_chain_id()
        self._writer: AuditWriter | None = None
        self._reader: AuditStore | None = None
        if cfg.enabled:
            chain = Chain(self.chain_id)
            spill = SpillFile(spill_path_for(cfg.spill_path, self.chain_id))
            self._writer = AuditWriter(cfg, AuditStore.open(url), chain, spill)

    @classmethod
    def open(cls, cfg: AuditConfig, storage_url: str) -> AuditLog:
        """An audit log writing to `cfg.url`, or to the main storage when that is None."""
        return cls(cfg, cfg.url or storage_url)

    def start(self) -> None:
        """Apply pending migrations (when the database is reachable) and start the writer thread.
        A database that is down does not stop the start: records spill until it returns."""
        if self._writer is not None:
            self._writer.start()

    def watch_load(self, in_flight: Callable[[], int]) -> None:
        """Tell the writer how many requests the process is serving: while few are, it gives the core back to the
        event loop between the statements of a batch (`AuditWriter._pause`)."""
        if self._writer is not None:
            self._writer.in_flight = in_flight

    def submit(self, record: dict[str, Any]) -> None:
        """Queue one request's record. Non-blocking, never raises, never waits on the database."""
        w = self._writer
        if w is not None:
            w.submit(record)

    def submit_prepared(self, cols: Columns, text: str) -> None:
        """`submit` for a record `workjet_fast._workjet_fast.audit_record` already made: its columns and canonical
        text (the text must be `canonical(normalise(record))`, and the columns `columns(normalise(record))`)."""
        w = self._writer
        if w is not None:
            w.submit_prepared((cols, text))

    def close(self, timeout: float | None = None) -> bool:
        """Flush every queued record and stop; False if `timeout` expired (what remained was spilled)."""
        ok = True
        if self._writer is not None:
            ok = self._writer.close(timeout)
        if self._reader is not None:
            self._reader.close()
        return ok

    def stats(self) -> dict[str, int]:
        """Counters since start: queued (accepted by submit), written, spilled, dropped (0 unless the
        spill file failed while the database was down, or the database refused a row), replayed, batches,
        queue_depth, writer_boosts (writers started at normal priority because the background one fell behind)."""
        w = self._writer
        if w is None:
            keys = ("queued", "written", "spilled", "dropped", "replayed", "batches", "queue_depth", "writer_boosts")
            return dict.fromkeys(keys, 0)
        depth = w.queue_depth()
        return {
            "queued": w.drained + depth + w.overflowed,
            "written": w.written,
            "spilled": w.spilled_total,
            "dropped": w.dropped + w.refused,
            "replayed": w.replayed,
            "batches": w.batches,
            "queue_depth": depth,
            "writer_boosts": w.boosts,
        }

    @property
    def reader(self) -> AuditStore:
        """A store on its own connection for queries (the writer's connection stays free)."""
        if self._reader is None:
            self._reader = AuditStore.open(self.url)
        return self._reader
