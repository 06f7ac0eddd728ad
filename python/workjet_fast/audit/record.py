"""The audit record: which fields it has, how a request's dict is normalised, and its canonical bytes.

The canonical form (sorted keys, compact, UTF-8, via orjson) is what is stored and what the hash chain
covers, so verification never re-serialises: it hashes the stored text.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson

__all__ = ["BODY_FIELDS", "FIELDS", "Columns", "access_log_line", "canonical", "columns", "normalise"]

FIELDS: tuple[str, ...] = (
    "request_id",
    "client",
    "started_at",
    "path",
    "key_id",
    "key_name",
    "user",
    "requested_model",
    "route_kind",
    "served_by",
    "served_model",
    "attempts",
    "status",
    "error_code",
    "stream",
    "upstream_ttfb_ms",
    "upstream_ms",
    "prompt_tokens",
    "prompt_tokens_source",
    "completion_tokens",
    "completion_tokens_source",
    "finish_reason",
    "dlp_findings",
    "dlp_state",
    "ended_at",
    "latency_ms",
)
BODY_FIELDS: tuple[str, ...] = ("request_body", "response_body")
_ATTEMPT_FIELDS = ("deployment", "outcome", "status", "latency_ms", "error")
_FINDING_FIELDS = ("rule_id", "entity", "count", "direction", "action")  # never the matched value
_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _pick(item: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(item, dict):
        item = {k: getattr(item, k, None) for k in fields}
    return {k: item.get(k) for k in fields}


_NUMBERS = ("started_at", "ended_at", "latency_ms", "upstream_ms", "upstream_ttfb_ms")
_INTS = ("status",)
_COUNTS = ("prompt_tokens", "completion_tokens")
_TEXTS = ("key_id", "key_name", "requested_model", "served_by")  # indexed columns


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        f = float(v) if -1e300 < v < 1e300 else math.nan
        return f if math.isfinite(f) else None
    return None


def _int(v: Any) -> int | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31  # an INTEGER column
    return v if ok else None


def _text(v: Any) -> str:
    # Indexed columns must be storable on both engines: no NUL (PostgreSQL TEXT), no lone surrogates.
    s = v if isinstance(v, str) else str(v)
    if s.isascii() and "\x00" not in s:
        return s
    return s.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _items(v: Any) -> list[Any] | tuple[Any, ...]:
    return v if isinstance(v, list | tuple) else ()


def normalise(raw: dict[str, Any], *, store_bodies: bool = False) -> dict[str, Any]:
    """The record as stored: known fields only (unknown keys are dropped, so nothing leaks by accident),
    attempts and DLP findings reduced to their documented keys, bodies only when `store_bodies`.
    Values of the wrong type become None (numbers, indexed strings) so a bad record is still written."""
    # Each check starts with the exact type a RequestContext produces (this runs on every request); anything
    # else takes the general path, with the same result.
    get = raw.get
    rec = {k: get(k) for k in FIELDS}
    rid = rec["request_id"]
    rec["request_id"] = _text(rid) if rid else uuid.uuid4().hex
    for k in _NUMBERS:
        v = rec[k]
        if type(v) is not float or not -1e300 < v < 1e300:
            rec[k] = _number(v)
    for k in _INTS:
        rec[k] = _int(rec[k])
    for k in _COUNTS:
        v = rec[k]
        if not (type(v) is int and 0 <= v < 2**63):
            rec[k] = v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None
    for k in _TEXTS:
        v = rec[k]
        if v is not None and not (type(v) is str and v.isascii() and "\x00" not in v):
            rec[k] = _text(v)
    rec["attempts"] = [_pick(a, _ATTEMPT_FIELDS) for a in _items(raw.get("attempts"))]
    rec["dlp_findings"] = [_pick(f, _FINDING_FIELDS) for f in _items(raw.get("dlp_findings"))]
    if rec["started_at"] is None:
        rec["started_at"] = rec["ended_at"] or 0.0
    if store_bodies:
        for k in BODY_FIELDS:
            if raw.get(k) is not None:
                rec[k] = raw[k]
    return rec


# The audit table's indexed columns of a record: request_id, started_at, key_id, key_name, requested_model,
# served_by, status. `workjet_fast._workjet_fast.audit_record` returns them in this order too.
Columns = tuple[str, float, Any, Any, Any, Any, "int | None"]


def columns(rec: dict[str, Any]) -> Columns:
    """The indexed columns of a normalised record."""
    status = rec.get("status")
    return (
        str(rec["request_id"]),
        float(rec.get("started_at") or 0.0),
        rec.get("key_id"),
        rec.get("key_name"),
        rec.get("requested_model"),
        rec.get("served_by"),
        status if isinstance(status, int) else None,
    )


def canonical(rec: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace; values orjson cannot encode become strings."""
    try:
        return orjson.dumps(rec, default=str, option=_OPTS)
    except TypeError:  # e.g. an integer beyond 64 bits: keep the record, as text
        return orjson.dumps(_safe(rec), default=str, option=_OPTS)


def _safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_safe(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        return str(v)
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    return v


def access_log_line(raw: dict[str, Any]) -> bytes:
    """One structured JSON access-log line (newline-terminated) from a request's record: no bodies, no key."""
    line = {
        "request_id": raw.get("request_id"),
        "ts": raw.get("ended_at") or raw.get("started_at"),
        "client": raw.get("client"),
        "path": raw.get("path"),
        "key_id": raw.get("key_id"),
        "model": raw.get("requested_model"),
        "served_by": raw.get("served_by"),
        "status": raw.get("status"),
        "error_code": raw.get("error_code"),
        "stream": raw.get("stream"),
        "latency_ms": raw.get("latency_ms"),
        "upstream_ms": raw.get("upstream_ms"),
        "prompt_tokens": raw.get("prompt_tokens"),
        "completion_tokens": raw.get("completion_tokens"),
        "dlp_state": raw.get("dlp_state"),
    }
    return orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE)
