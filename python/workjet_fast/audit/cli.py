"""`workjet audit query | export | verify | prune`.

The lead's CLI calls `register(subparsers)`; each subcommand sets `func=run`, and `run(args)` loads the
settings from `args.config`. Records go to stdout (table, json, csv, jsonl); messages go to stderr.
Exit codes: 0 ok, 1 failure (or `verify` found problems), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Iterable
from typing import IO, Any

import orjson

from workjet_fast.audit.chain import verify
from workjet_fast.audit.store import AuditStore, Filters, InvalidCursor, parse_status, parse_time
from workjet_fast.config import ConfigError, Settings, load_settings
from workjet_fast.storage.db import StorageError

__all__ = ["CSV_COLUMNS", "register", "run"]

DEFAULT_CONFIG = "examples/workjet.yaml"
CSV_COLUMNS = (
    "started_at", "request_id", "key_id", "key_name", "user", "client", "path", "requested_model", "route_kind",
    "served_by", "status", "error_code", "stream", "latency_ms", "upstream_ms", "upstream_ttfb_ms",
    "prompt_tokens", "completion_tokens", "finish_reason", "dlp_state", "chain_id", "seq",
)  # fmt: skip
_TABLE = (("time", 20), ("request_id", 24), ("key", 14), ("model", 18), ("served_by", 24), ("status", 6), ("ms", 8))


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `audit` and its subcommands to the `workjet` parser's subparsers."""
    audit: argparse.ArgumentParser = subparsers.add_parser(
        "audit", help="query, export, verify and prune the audit log"
    )
    sub = audit.add_subparsers(dest="audit_cmd", required=True)

    def common(sp: argparse.ArgumentParser, filters: bool = True) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
        if filters:
            sp.add_argument("--since", help="from this time: epoch, ISO 8601 (UTC if no zone), or an age (15m, 2h, 7d)")
            sp.add_argument("--until", help="before this time (same forms as --since)")
            sp.add_argument("--key", help="key id or key name")
            sp.add_argument("--model", help="requested model, or the deployment that served it")
            sp.add_argument("--status", help="a status (429) or a class (5xx)")
            sp.add_argument("--request-id", dest="request_id")
        sp.set_defaults(func=run)
        return sp

    q = common(sub.add_parser("query", help="show records, newest first"))
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--cursor", help="continue from the cursor printed after the previous page")
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    e = common(sub.add_parser("export", help="write every matching record, oldest first"))
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("--output", "-o", help="file to write (default: stdout)")
    v = common(sub.add_parser("verify", help="check the hash chains and checkpoints"), filters=False)
    v.add_argument("--format", choices=("text", "json"), default="text")
    p = common(sub.add_parser("prune", help="delete records older than N days (keeps chains verifiable)"), False)
    p.add_argument("--days", type=int, help="default: audit.retention_days")
    return audit


def run(args: argparse.Namespace) -> int:
    """Run one `workjet audit` subcommand; returns the exit code."""
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    store = AuditStore.open(settings.audit.url or settings.storage_url)
    try:
        store.migrate()
        return int(_COMMANDS[args.audit_cmd](args, settings, store))
    except (ValueError, InvalidCursor) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _filters(args: argparse.Namespace) -> Filters:
    if args.status:
        parse_status(args.status)
    return Filters(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        key=args.key,
        model=args.model,
        status=args.status,
        request_id=args.request_id,
    )


def _iso(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _csv(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for r in records:
        w.writerow(
            [_iso(r.get(c)) if c == "started_at" else ("" if r.get(c) is None else r.get(c)) for c in CSV_COLUMNS]
        )
        n += 1
    return n


def _query(args: argparse.Namespace, settings: Settings, store: AuditStore) -> int:
    if not 1 <= args.limit <= 100_000:
        raise ValueError("--limit must be between 1 and 100000")
    records, nxt = store.query(_filters(args), args.limit, args.cursor)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.format == "csv":
        _csv(records, sys.stdout)
    else:
        print("  ".join(name.ljust(width) for name, width in _TABLE))
        for r in records:
            cells = (
                _iso(r.get("started_at"))[:19], r.get("request_id"), r.get("key_name") or r.get("key_id"),
                r.get("requested_model"), r.get("served_by"), r.get("status"),
                f"{r['latency_ms']:.1f}" if isinstance(r.get("latency_ms"), int | float) else "",
            )  # fmt: skip
            print("  ".join(str("" if c is None else c)[:w].ljust(w) for c, (_, w) in zip(cells, _TABLE, strict=True)))
    print(f"{len(records)} record(s)" + (f"; next page: --cursor {nxt}" if nxt else ""), file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, settings: Settings, store: AuditStore) -> int:
    out: IO[str] = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        records = store.export(_filters(args))
        if args.format == "csv":
            n = _csv(records, out)
        else:
            n = 0
            for r in records:
                out.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE).decode())
                n += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {n} record(s)" + (f" to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace, settings: Settings, store: AuditStore) -> int:
    report = verify(store, settings.audit.checkpoint_key)
    if args.format == "json":
        body = {
            "ok": report.ok,
            "chains": report.chains,
            "rows": report.rows,
            "checkpoints": report.checkpoints,
            "problems": [
                {"chain_id": p.chain_id, "seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems
            ],
            "warnings": report.warnings,
        }
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for p in report.problems:
            print(p.render())
        for w in report.warnings:
            print(f"warning: {w}", file=sys.stderr)
        verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        print(f"{verdict} ({report.chains} chain(s), {report.rows} record(s), {report.checkpoints} checkpoint(s))")
    return 0 if report.ok else 1


def _prune(args: argparse.Namespace, settings: Settings, store: AuditStore) -> int:
    days = args.days or settings.audit.retention_days
    if not days or days < 1:
        raise ValueError("--days N (N >= 1) is required when audit.retention_days is not set")
    import time

    n = store.prune(time.time() - days * 86400.0, settings.audit.checkpoint_key)
    print(f"pruned {n} record(s) older than {days} day(s)", file=sys.stderr)
    return 0


_COMMANDS = {"query": _query, "export": _export, "verify": _verify, "prune": _prune}
