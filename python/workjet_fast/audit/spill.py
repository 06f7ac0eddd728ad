"""The spill file: an append-only JSON-lines file of chained rows that could not reach the database.

Each writer process appends to its own file `<stem>.<chain id><suffix>` and holds an exclusive
`flock` on it while alive, so a process that starts later can tell an orphan (its owner died) from a
live file and replay the orphan. Rows carry their chain id and seq, and inserts skip rows already
present, so replaying twice (a crash during replay) never creates duplicates.

fsync policy: the writer thread fsyncs after every batch it spills; rows spilled by `submit` when the
queue is full are written at once (surviving a process kill) and fsynced by the writer within one
`flush_interval` (surviving an OS crash from then on).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from workjet_fast.audit.chain import Row

__all__ = ["SpillFile", "orphans", "read_rows", "spill_path_for"]

log = logging.getLogger("workjet.audit")


def spill_path_for(base: str, chain_id: str) -> Path:
    p = Path(base)
    return p.with_name(f"{p.stem}.{chain_id}{p.suffix}")


def orphans(base: str, own: Path | None) -> list[Path]:
    """Spill files of other chains next to `base` (and `base` itself), oldest first."""
    p = Path(base)
    if not p.parent.is_dir():
        return []
    pat = re.compile(re.escape(p.stem) + r"\.[A-Za-z0-9_.-]+" + re.escape(p.suffix) + "$")
    found = [q for q in p.parent.iterdir() if q != own and (q == p or pat.fullmatch(q.name))]
    return sorted((q for q in found if q.is_file()), key=lambda q: q.stat().st_mtime)


def read_rows(data: bytes) -> tuple[list[Row], int]:
    """Parse spill lines; returns (rows, bytes consumed). A torn last line (no newline) is left unread;
    a corrupt complete line is logged and skipped."""
    rows: list[Row] = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            rows.append(Row(*orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError):
            log.error("audit spill: skipping a corrupt line (%d bytes)", len(line))
    return rows, end


class SpillFile:
    """This process's spill file: appended by the writer and by `submit` on overflow, replayed by the writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._dirty = False
        self.size = 0  # bytes appended and not yet truncated
        self.offset = 0  # bytes already replayed

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "ab")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fh = fh
            self.size = fh.seek(0, os.SEEK_END)
        return self._fh

    @property
    def pending(self) -> bool:
        return self.size > self.offset

    def append(self, rows: Sequence[Row], fsync: bool) -> None:
        """Append rows as one write; raises OSError if the disk refuses."""
        data = b"".join(orjson.dumps(list(r), option=orjson.OPT_APPEND_NEWLINE) for r in rows)
        with self._lock:
            fh = self._open()
            fh.write(data)
            fh.flush()
            self.size += len(data)
            if fsync:
                os.fsync(fh.fileno())
                self._dirty = False
            else:
                self._dirty = True

    def sync(self) -> None:
        with self._lock:
            if self._dirty and self._fh is not None:
                os.fsync(self._fh.fileno())
                self._dirty = False

    def read_pending(self, limit_bytes: int = 4 << 20) -> tuple[list[Row], int]:
        """Rows after the replay offset; returns (rows, new offset) without moving the offset."""
        with self._lock:
            start, stop = self.offset, self.size
        with open(self.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(min(stop - start, limit_bytes))
        rows, used = read_rows(data)
        if used == 0 and data:  # a line longer than the read window
            with open(self.path, "rb") as fh:
                fh.seek(start)
                data = fh.read(stop - start)
            rows, used = read_rows(data)
        return rows, start + used

    def replayed(self, offset: int) -> None:
        """Mark bytes up to `offset` as in the database; truncate the file once everything is."""
        with self._lock:
            self.offset = offset
            if self.offset >= self.size and self._fh is not None:
                self._fh.truncate(0)
                os.fsync(self._fh.fileno())
                self.size = self.offset = 0
                self._dirty = False

    def close(self) -> None:
        """Release the file; an empty file is removed, a non-empty one stays for the next start to replay."""
        with self._lock:
            if self._fh is None:
                return
            os.fsync(self._fh.fileno())
            if self.size == 0:
                self.path.unlink(missing_ok=True)
            self._fh.close()  # releases the flock
            self._fh = None


def lock_orphan(path: Path) -> IO[bytes] | None:
    """Open an orphan spill file with its lock, or None when its owner is alive (or it vanished)."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh
