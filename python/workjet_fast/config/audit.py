"""The `audit:` section: where and how the audit log is written (owned by the audit feature)."""

from __future__ import annotations

from dataclasses import dataclass, field

from workjet_fast.config._reader import Section


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = True
    url: str | None = None  # None: the storage url
    queue_size: int = 10_000  # records held in memory; beyond it new records go straight to the spill file
    # Batches bounded by a short interval: the writer is a thread, and a long burst of its Python work holds the
    # GIL away from the event loop (measured: batch 500 / 0.2 s added ~3 ms to p99 at 1,500 req/s; 32 / 0.02 s
    # ~0.8 ms). Below 6,400 req/s the interval, not the size, ends a batch; a full batch of 128 costs ~25% less
    # CPU per record than one of 32 (docs/audit.md).
    batch_size: int = 128  # records per insert transaction
    flush_interval: float = 0.02  # seconds: the longest a record waits in the queue when the writer keeps up
    spill_path: str = "data/audit-spill.jsonl"  # base name; each process spills to <stem>.<chain id><suffix>
    retention_days: int | None = None  # None: keep forever; otherwise pruned by the writer and `workjet audit prune`
    store_bodies: bool = False  # opt-in: keep the (redacted) request/response bodies in the record
    checkpoint_interval: float = 60.0  # seconds between chain checkpoints
    checkpoint_key: str = field(default="", repr=False)  # HMAC-SHA256 key for checkpoints; "" = plain SHA-256
    prune_interval: float = 3600.0  # seconds between retention runs of the writer
    # Linux: the writer thread runs at nice 19 while it keeps up, so a waking event loop takes the core from it at
    # once; when the queue reaches two batches, a writer at the worker's own priority takes over (docs/audit.md).
    background_writer: bool = False
    # The writer gives the core back to the event loop between the statements of a batch (16 rows each, SQLite)
    # while fewer than this many requests are in flight; 0: never (docs/audit.md).
    yield_below: int = 2


def read_audit(s: Section, data_dir: str) -> AuditConfig:
    cfg = AuditConfig(
        enabled=s.bool("enabled", True),
        url=s.str("url", None),
        queue_size=s.int("queue_size", 10_000, min=1),
        batch_size=s.int("batch_size", 128, min=1),
        flush_interval=s.float("flush_interval", 0.02, positive=True),
        spill_path=s.str("spill_path", f"{data_dir}/audit-spill.jsonl"),
        retention_days=s.int("retention_days", None, min=1),
        store_bodies=s.bool("store_bodies", False),
        checkpoint_interval=s.float("checkpoint_interval", 60.0, positive=True),
        checkpoint_key=s.str("checkpoint_key", ""),
        prune_interval=s.float("prune_interval", 3600.0, positive=True),
        background_writer=s.bool("background_writer", False),
        yield_below=s.int("yield_below", 2, min=0),
    )
    if cfg.url is not None and not cfg.url.startswith(("sqlite://", "postgresql://", "postgres://")):
        s.problem("url", "must start with sqlite:/// or postgresql://")
    s.finish()
    return cfg
