"""The background writer: a bounded in-memory queue drained by one thread into batched inserts.

Request path (after the response was sent): the record is reduced to its indexed columns and canonical text
there, which needs no ordering, so the writer thread holds the GIL only to link, bind and insert (less time
during which the event loop waits for it; a batch's hashes are one Rust call, without the GIL from 16 KiB). The
gateway reduces the record in one Rust call and hands the result to `submit_prepared()`; `submit()` reduces
it in Python (`normalise`, `canonical`). Either appends to a deque (no
lock, no I/O). When the deque holds `queue_size` records, the record is chained on this process's *overflow
chain* (`<chain id>-overflow`) and appended to the spill file instead (a buffered write, never the database):
records are never dropped silently. Two chains keep a crash from leaving a gap: each chain's rows become durable
in seq order (the main chain batch by batch in the writer thread, the overflow chain row by row under its lock),
so a process killed mid-batch loses only the tail of a chain, never a middle.

Writer thread, every `flush_interval` (sooner when a batch is full): take up to `batch_size` records, chain
them, insert them in one transaction. If the database fails, the batch goes to the spill file (fsynced) and new
batches follow it there until a retry succeeds (backoff 0.5 s doubling to 30 s); then the spill file is replayed
(idempotent inserts) and truncated. It also fsyncs rows spilled by `submit`, writes checkpoints every
`checkpoint_interval`, prunes by `retention_days`, and replays spill files left by processes that died.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from workjet_fast.audit.chain import Chain, Row, make_checkpoint
from workjet_fast.audit.record import Columns, canonical, columns, normalise
from workjet_fast.audit.spill import SpillFile, lock_orphan, orphans, read_rows
from workjet_fast.audit.store import AuditStore
from workjet_fast.config.audit import AuditConfig
from workjet_fast.storage.db import StorageError

__all__ = ["AuditWriter"]

Prepared = tuple[Columns, str]  # a normalised record's indexed columns and its canonical text

log = logging.getLogger("workjet.audit")
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0
_BACKGROUND_NICE = 19
# Gives up the core (and the GIL) to a thread that waits for it; returns at once when none does. Not on Windows.
_YIELD: Callable[[], None] | None = getattr(os, "sched_yield", None)
_CALM_SECONDS = 1.0  # a writer at normal priority returns to the background after this long below one batch


class AuditWriter:
    def __init__(self, cfg: AuditConfig, store: AuditStore, chain: Chain, spill: SpillFile) -> None:
        self.cfg = cfg
        self.store = store
        self.chain = chain  # touched by the writer thread only
        self.overflow = Chain(f"{chain.chain_id}-overflow")
        self.spill = spill
        self._dq: deque[Prepared] = deque()
        self._cap = cfg.queue_size
        self._batch = cfg.batch_size
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._db_ok = False
        self._migrated = False
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN
        self._last_cp = time.monotonic()
        self._cp_seq: dict[str, int] = {}
        self._last_prune = -math.inf  # prune at the first chance
        self._orphans_done = False
        # The writer runs in the background (nice 19, Linux) while it keeps up; `_low` says the current one does.
        self._background = cfg.background_writer and sys.platform == "linux"
        self._low = False
        self._boost_at = max(1, min(2 * cfg.batch_size, cfg.queue_size // 2))
        self._swap = threading.Lock()  # a takeover and the start of close() exclude each other
        # counters; each written by one thread only (the writer, or submit under the chain lock)
        self.drained = 0
        self.overflowed = 0
        self.written = 0
        self.spilled = 0  # by the writer thread; `spilled_total` adds the overflow
        self.replayed = 0
        self.batches = 0
        self.dropped = 0
        self.refused = 0  # rows the database refused while reachable (reported within `dropped`)
        self.errors = 0
        self.boosts = 0  # writers started at normal priority because the background one fell behind
        # How many requests the process is serving; read by the writer thread (`_pause`). None: never pause.
        self.in_flight: Callable[[], int] | None = None

    # ---- request path -------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> None:
        try:
            item = self._prepare(record)
        except Exception:  # never raise into the request path (even a minimal record could not be made)
            self.errors += 1
            log.exception("audit submit failed")
            return
        self.submit_prepared(item)

    def submit_prepared(self, item: Prepared) -> None:
        """`submit` for a record already reduced to (`columns`, canonical text), as `audit_record` returns it."""
        try:
            dq = self._dq
            if len(dq) < self._cap and not self._closing:
                dq.append(item)
                if len(dq) >= self._batch:
                    if not self._wake.is_set():
                        self._wake.set()
                    if self._low and len(dq) >= self._boost_at:
                        self._boost()
            else:
                self._overflow(item)
        except Exception:  # never raise into the request path
            self.errors += 1
            log.exception("audit submit failed")

    def _overflow(self, item: Prepared) -> None:
        with self.overflow.lock:
            mark = self.overflow.seq, self.overflow.head
            rows = self._link_each(self.overflow, [item])
            try:
                self.spill.append(rows, fsync=self._thread is None or not self._thread.is_alive())
                self.overflowed += 1
            except OSError as e:
                self.overflow.seq, self.overflow.head = mark  # the lost record leaves no gap in the chain
                self.dropped += 1
                log.error("audit: record %s lost: queue full and spill file failed: %s", rows[0].request_id, e)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._connect()
        self._thread = threading.Thread(target=self._run, name="workjet-audit-writer", daemon=True)
        self._thread.start()

    def _boost(self) -> None:
        """The background writer fell behind: a writer at the calling thread's priority (the event loop's) takes
        over as soon as the background one has finished its batch. Only a new thread can do this: an
        unprivileged thread may lower its own priority but never raise it again.

        The new thread becomes current only once it runs; it writes only after the background writer, which
        ends when it sees it is no longer current, has returned. A thread that cannot start changes nothing."""
        with self._swap:
            if self._closing or not self._low:
                return
            t = threading.Thread(target=self._run, args=(self._thread,), name="workjet-audit-writer", daemon=True)
            try:
                t.start()
            except RuntimeError as e:  # no thread to be had (a process limit)
                log.warning("audit: no writer at normal priority could be started: %s", e)
                return
            self._thread, self._low = t, False
            self.boosts += 1

    def close(self, timeout: float | None = None) -> bool:
        """Flush everything and stop; True when every record reached the database or the spill file."""
        with self._swap:
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)  # the current writer: no takeover starts once _closing is set
            if self._thread.is_alive():
                # The writer is stuck on the database: put what is still queued in the spill file.
                while self._dq:
                    try:
                        self._overflow(self._dq.popleft())
                    except IndexError:
                        break
                self.spill.sync()
                return False
        else:
            self._flush_all()
        self.spill.close()
        self.store.close()
        return True

    @property
    def spilled_total(self) -> int:
        return self.spilled + self.overflowed

    def queue_depth(self) -> int:
        return len(self._dq)

    # ---- writer thread ------------------------------------------------------------------------------
    def _run(self, prev: threading.Thread | None = None) -> None:
        """The writer thread's loop; `prev`: the background writer this one takes over from (`_boost`)."""
        me = threading.current_thread()
        if prev is None:
            self._orphans_done = self._replay_orphans()
            if self._background:
                self._lower()
        else:
            prev.join()  # one writer at a time: batches are linked and inserted in the chain's order
        calm_since: float | None = None
        while self._thread is me:
            woken = self._wake.wait(self.cfg.flush_interval)
            self._wake.clear()
            queued = len(self._dq)
            closing = self._closing
            try:
                self._flush_all(me)
                if self._thread is me:
                    self._maintain()
            except Exception:
                self.errors += 1
                log.exception("audit writer error")
                time.sleep(min(self.cfg.flush_interval, 1.0))
            if self._thread is not me:
                self._wake.set()  # the writer that took over may have waited for this wake-up, which we took
                return  # superseded by a writer at normal priority, which continues from here
            if closing and not self._dq:
                try:
                    self._maintain(final=True)
                except Exception:
                    log.exception("audit writer error at close")
                return
            if self._background and not self._low and not closing:
                # Calm: batches end by the interval, not by their size (a full batch wakes the writer early).
                if woken or queued >= self._batch:
                    calm_since = None
                elif calm_since is None:
                    calm_since = time.monotonic()
                elif time.monotonic() - calm_since >= _CALM_SECONDS:
                    self._lower()

    def _lower(self) -> None:
        """Run this thread at nice 19: the event loop, when it wakes, takes the core from it at once (a writer
        at the same priority that slept for a flush interval is owed CPU and keeps it, and the request in
        flight waits for the batch). On Linux the nice value is the calling thread's own."""
        try:
            os.setpriority(os.PRIO_PROCESS, 0, _BACKGROUND_NICE)
        except OSError as e:
            log.warning("audit: the writer stays at normal priority: %s", e)
            self._background = False
            return
        self._low = True

    def _prepare(self, record: dict[str, Any]) -> Prepared:
        """The normalised record's columns and canonical text; a record that cannot be normalised or written is
        kept in minimal form."""
        try:
            rec = normalise(record, store_bodies=self.cfg.store_bodies)
            return columns(rec), canonical(rec).decode()
        except Exception:
            log.exception("audit: malformed record kept in minimal form")
            rid = record.get("request_id") if isinstance(record, dict) else None
            return _minimal(rid)

    def _flush_all(self, owner: threading.Thread | None = None) -> None:
        """Write what is queued; a writer thread (`owner`) stops after a batch when another has taken over."""
        dq = self._dq
        while dq and (owner is None or self._thread is owner):
            take = min(len(dq), self._batch)
            items = [dq.popleft() for _ in range(take)]
            self.drained += take
            mark = self.chain.seq, self.chain.head
            try:
                rows = self.chain.link_prepared(items)
            except Exception:
                rows = self._link_each(self.chain, items)
            if not self._write(rows):
                self.chain.seq, self.chain.head = mark

    @staticmethod
    def _link_each(chain: Chain, items: list[Prepared]) -> list[Row]:
        # A record that cannot be linked is kept in minimal form rather than lost.
        rows: list[Row] = []
        for item in items:
            try:
                rows += chain.link_prepared([item])
            except Exception:
                log.exception("audit: a record kept in minimal form")
                rows += chain.link_prepared([_minimal(item[0][0])])
        return rows

    def _connect(self) -> bool:
        try:
            if not self._migrated:
                self.store.migrate()
                self._migrated = True
            else:
                self.store.db.ping()
        except StorageError as e:
            self._down(e)
            return False
        self._db_ok = True
        self._backoff = _BACKOFF_MIN
        return True

    def _down(self, e: Exception) -> None:
        if self._db_ok or self._retry_at == 0.0:
            log.error("audit: database unavailable, spilling to %s: %s", self.spill.path, e)
        self._db_ok = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)

    def _db_usable(self) -> bool:
        return self._db_ok or (time.monotonic() >= self._retry_at and self._connect())

    def _write(self, rows: list[Row]) -> bool:
        """Insert a batch, or spill it; False only if both failed (the records are lost and counted)."""
        if self._db_usable():
            try:
                self.written += self._insert(rows)
                self.batches += 1
                return True
            except StorageError as e:
                self._down(e)
        try:
            self.spill.append(rows, fsync=True)
            self.spilled += len(rows)
            return True
        except OSError as e:
            self.dropped += len(rows)
            log.error("audit: %d records lost: database down and spill file failed: %s", len(rows), e)
            return False

    def _insert(self, rows: list[Row]) -> int:
        """Insert rows; returns how many were stored. Raises StorageError only when the database is unreachable:
        a batch the database refuses while it answers is retried row by row, so one bad row cannot hold
        every other record back (a refused row is logged and counted as dropped; verify shows its seq)."""
        try:
            self.store.insert(rows, pause=self._pause())
            return len(rows)
        except StorageError:
            self.store.db.ping()
            if len(rows) == 1:
                self.refused += 1
                log.error("audit: the database refused record %s:%d", rows[0].chain_id, rows[0].seq)
                return 0
        return sum(self._insert([r]) for r in rows)

    def _pause(self) -> Callable[[], None] | None:
        """What to do between the statements of a batch: give the core to the event loop while it serves
        fewer than `yield_below` requests (`in_flight`, set by the gateway). A batch of 128 rows is ~1.5 ms of
        work on the worker's core, and the scheduler lets a thread that slept for a flush interval keep the core
        for that long: the request in flight waited for the whole batch (p99 at one connection ~1.5 ms with the
        audit on, ~0.3 without it). Yielding every PAUSED_ROWS rows bounds that wait to about one statement (p99
        0.85 ms). With many requests in flight they queue anyway, and the yields cost 5-7% of the throughput."""
        probe = self.in_flight
        if probe is None or _YIELD is None or probe() >= self.cfg.yield_below:
            return None
        return _YIELD

    def _maintain(self, final: bool = False) -> None:
        self.spill.sync()
        if self.spill.pending and self._db_usable():
            self._replay_own()
        if not self._db_ok:
            return
        if not self._orphans_done:
            self._orphans_done = self._replay_orphans()
        now = time.monotonic()
        if final or now - self._last_cp >= self.cfg.checkpoint_interval:
            self._checkpoint()
            self._last_cp = now
        if self.cfg.retention_days and now - self._last_prune >= self.cfg.prune_interval:
            self._last_prune = now
            cutoff = time.time() - self.cfg.retention_days * 86400.0
            n = self.store.prune(cutoff, self.cfg.checkpoint_key)
            if n:
                log.info("audit: pruned %d records older than %d days", n, self.cfg.retention_days)

    def _replay_own(self) -> None:
        try:
            while self.spill.pending:
                rows, offset = self.spill.read_pending()
                for i in range(0, len(rows), self._batch):
                    self._insert(rows[i : i + self._batch])
                self.replayed += len(rows)
                self.spill.replayed(offset)
                if not rows:
                    break
        except StorageError as e:
            self._down(e)

    def _checkpoint(self) -> None:
        with self.overflow.lock:
            if self.spill.pending:
                return  # rows below a head are still in the spill file
            heads = [
                (c.chain_id, c.seq, c.head)
                for c in (self.chain, self.overflow)
                if c.seq > self._cp_seq.get(c.chain_id, 0)
            ]
        for chain_id, seq, head in heads:
            cp = make_checkpoint(self.cfg.checkpoint_key, chain_id, seq, "periodic", head, time.time())
            try:
                self.store.add_checkpoint(cp)
                self._cp_seq[chain_id] = seq
            except StorageError as e:
                self._down(e)
                return

    def _replay_orphans(self) -> bool:
        """Replay spill files whose owner died; False when some must wait for the database."""
        done = True
        for path in orphans(self.cfg.spill_path, self.spill.path):
            fh = lock_orphan(path)
            if fh is None:
                continue
            try:
                rows, _ = read_rows(fh.read())
                if rows and not self._db_usable():
                    done = False
                    continue  # keep it for a later attempt
                for i in range(0, len(rows), self._batch):
                    self._insert(rows[i : i + self._batch])
                self.replayed += len(rows)
                path.unlink(missing_ok=True)
                log.info("audit: replayed %d records from %s", len(rows), path)
            except StorageError as e:
                done = False
                self._down(e)
            finally:
                fh.close()
        return done


def _minimal(request_id: Any) -> Prepared:
    rec = normalise({"request_id": request_id, "error_code": "audit_record_malformed"})
    return columns(rec), canonical(rec).decode()
