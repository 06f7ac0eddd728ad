"""Tamper evidence: a hash chain per writer process, checkpoints, and verification.

Every row stores `prev_hash` and `hash = SHA-256(chain_id \\n seq \\n prev_hash \\n record)`, where
`record` is the stored canonical JSON text. A chain starts at seq 1 with `prev_hash = GENESIS`.
Checkpoints record a chain head (seq, hash, count) and carry a MAC: HMAC-SHA256 with the configured
key, or a plain SHA-256 when no key is set. Pruning deletes a whole prefix of a chain and leaves an
`anchor` checkpoint holding the hash the first remaining row links to, so what remains still verifies.

`verify(store)` walks every chain and reports each problem with its chain id and sequence:
a modified row (hash mismatch, or indexed columns that disagree with the record), a deleted row
(a gap, a missing start, a head below a checkpoint), an inserted row (a broken link), a bad checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from workjet_fast._workjet_fast import chain_hashes
from workjet_fast.audit.record import Columns, canonical, columns

if TYPE_CHECKING:
    from workjet_fast.audit.store import AuditStore

__all__ = ["GENESIS", "Chain", "Checkpoint", "Problem", "Row", "VerifyReport", "checkpoint_mac", "row_hash", "verify"]

GENESIS = "0" * 64


class Row(NamedTuple):
    chain_id: str
    seq: int
    request_id: str
    ts: float
    key_id: str | None
    key_name: str | None
    model: str | None
    served_by: str | None
    status: int | None
    record: str
    prev_hash: str
    hash: str


class Checkpoint(NamedTuple):
    chain_id: str
    seq: int
    kind: str  # periodic | anchor
    head_hash: str
    total: int  # rows in the chain up to seq (column `count`)
    created_at: float
    mac: str


def row_hash(chain_id: str, seq: int, prev_hash: str, record: str) -> str:
    h = hashlib.sha256(f"{chain_id}\n{seq}\n{prev_hash}\n".encode())
    h.update(record.encode())
    return h.hexdigest()


def checkpoint_mac(key: str, chain_id: str, seq: int, kind: str, head_hash: str, count: int, created_at: float) -> str:
    msg = f"{chain_id}\n{seq}\n{kind}\n{head_hash}\n{count}\n{created_at!r}".encode()
    if key:
        return "hmac-sha256:" + hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(msg).hexdigest()


def make_checkpoint(key: str, chain_id: str, seq: int, kind: str, head_hash: str, created_at: float) -> Checkpoint:
    mac = checkpoint_mac(key, chain_id, seq, kind, head_hash, seq, created_at)
    return Checkpoint(chain_id, seq, kind, head_hash, seq, created_at, mac)


class Chain:
    """The sequencer of one writer process: assigns seq and links rows, under a lock."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.seq = 0
        self.head = GENESIS
        self.lock = threading.Lock()

    def link(self, records: Iterable[dict[str, Any]]) -> list[Row]:
        """Chain normalised records; the caller holds `lock` when the rows must reach storage in order."""
        return self.link_prepared((columns(rec), canonical(rec).decode()) for rec in records)

    def link_prepared(self, items: Iterable[tuple[Columns, str]]) -> list[Row]:
        """`link` for records already reduced to (`columns(record)`, `canonical(record)` as text).

        The hashes of the whole run come from one Rust call (`chain_hashes`, `row_hash` row by row)."""
        items = list(items)
        chain_id, seq, head = self.chain_id, self.seq, self.head
        out: list[Row] = []
        for (cols, text), h in zip(items, chain_hashes(chain_id, seq + 1, head, [t for _, t in items]), strict=True):
            seq += 1
            out.append(Row(chain_id, seq, *cols, text, head, h))
            head = h
        self.seq, self.head = seq, head  # only once every row is built: an error leaves no gap
        return out


@dataclass(frozen=True)
class Problem:
    chain_id: str
    seq: int | None
    kind: str  # modified | deleted | inserted | checkpoint | unsigned
    detail: str

    def render(self) -> str:
        where = f"{self.chain_id}:{self.seq}" if self.seq is not None else self.chain_id
        return f"{self.kind:<10} {where}  {self.detail}"


@dataclass
class VerifyReport:
    chains: int = 0
    rows: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_COLUMNS = (("request_id", 2), ("key_id", 4), ("key_name", 5), ("requested_model", 6), ("served_by", 7))


def _columns_match(row: Row) -> bool:
    try:
        rec = orjson.loads(row.record)
    except orjson.JSONDecodeError:
        return False
    for name, i in _COLUMNS:
        if rec.get(name) != row[i]:
            return False
    status = rec.get("status")
    if (status if isinstance(status, int) else None) != row.status:
        return False
    return float(rec.get("started_at") or 0.0) == row.ts


def verify(store: AuditStore, key: str = "") -> VerifyReport:
    """Check every chain in the store; `key` is the checkpoint HMAC key (empty: none configured)."""
    report = VerifyReport()
    cps_by_chain: dict[str, list[Checkpoint]] = {}
    for cp in store.checkpoints():
        cps_by_chain.setdefault(cp.chain_id, []).append(cp)
    chain_ids = sorted(set(store.chain_ids()) | set(cps_by_chain))
    for chain_id in chain_ids:
        report.chains += 1
        _verify_chain(store, chain_id, cps_by_chain.get(chain_id, []), key, report)
    return report


def _verify_chain(store: AuditStore, chain_id: str, cps: list[Checkpoint], key: str, report: VerifyReport) -> None:
    def problem(seq: int | None, kind: str, detail: str) -> None:
        report.problems.append(Problem(chain_id, seq, kind, detail))

    good_cps: list[Checkpoint] = []
    for cp in cps:
        report.checkpoints += 1
        expected = checkpoint_mac(key, cp.chain_id, cp.seq, cp.kind, cp.head_hash, cp.total, cp.created_at)
        if cp.mac.startswith("hmac-sha256:") and not key:
            report.warnings.append(f"{chain_id}:{cp.seq} checkpoint is HMAC-signed but no checkpoint_key is set")
            good_cps.append(cp)
        elif not hmac.compare_digest(cp.mac, expected):
            problem(cp.seq, "checkpoint", f"{cp.kind} checkpoint MAC does not match (modified or forged checkpoint)")
        elif cp.total != cp.seq:
            problem(cp.seq, "checkpoint", f"{cp.kind} checkpoint count {cp.total} != seq {cp.seq}")
        else:
            good_cps.append(cp)
    anchors = [cp for cp in good_cps if cp.kind == "anchor"]
    anchor = max(anchors, key=lambda c: c.seq) if anchors else None
    heads = {cp.seq: cp for cp in good_cps if cp.kind != "anchor"}

    expect_seq = anchor.seq + 1 if anchor else 1
    prev_hash = anchor.head_hash if anchor else GENESIS
    last_seq = anchor.seq if anchor else 0
    first = True
    for row in store.iter_chain(chain_id):
        report.rows += 1
        if first and row.seq < expect_seq:
            problem(row.seq, "inserted", f"row below the pruning anchor at seq {expect_seq - 1}")
        elif row.seq > expect_seq:
            what = "chain start" if first and not anchor else f"seq {expect_seq}"
            problem(expect_seq, "deleted", f"rows missing from {what} to seq {row.seq - 1}")
        elif row.prev_hash != prev_hash:
            problem(row.seq, "inserted", "prev_hash does not link to the previous row (row inserted or replaced)")
        if row_hash(row.chain_id, row.seq, row.prev_hash, row.record) != row.hash:
            problem(row.seq, "modified", "row hash does not match its content")
        elif not _columns_match(row):
            problem(row.seq, "modified", "indexed columns disagree with the hashed record")
        head_cp = heads.get(row.seq)
        if head_cp is not None and head_cp.head_hash != row.hash:
            problem(row.seq, "modified", f"row hash differs from the {head_cp.kind} checkpoint at this seq")
        prev_hash, expect_seq, last_seq, first = row.hash, row.seq + 1, row.seq, False
    top = max((cp.seq for cp in good_cps), default=0)
    if top > last_seq:
        problem(last_seq + 1, "deleted", f"rows missing after seq {last_seq}: a checkpoint covers seq {top}")
