"""The record: known fields only, no secrets or matched values, canonical bytes, the access-log line."""

from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from workjet_fast.audit.record import FIELDS, access_log_line, canonical, normalise
from workjet_fast.context import Attempt, RequestContext


def ctx_record() -> dict[str, object]:
    ctx = RequestContext(request_id="req-1", key_id="k1", key_name="team", requested_model="gpt-4o-mini")
    ctx.attempts.append(Attempt("fake/upstream-mini", "ok", 200, 12.5))
    ctx.dlp_findings.append({"rule_id": "email", "entity": "EMAIL", "count": 2, "direction": "request",
                             "action": "redact", "value": "alice@example.com"})  # fmt: skip
    ctx.finish(200)
    return ctx.record()


def test_every_context_field_is_kept() -> None:
    raw = ctx_record()
    rec = normalise(raw)
    assert set(rec) == set(FIELDS)
    assert set(raw) == set(FIELDS)  # the context and the record schema agree
    assert rec["attempts"] == [
        {"deployment": "fake/upstream-mini", "outcome": "ok", "status": 200, "latency_ms": 12.5, "error": None}
    ]


def test_secrets_and_matched_values_are_dropped() -> None:
    raw = ctx_record() | {"api_key": "sk-live", "authorization": "Bearer sk-live"}
    text = canonical(normalise(raw)).decode()
    assert "sk-live" not in text and "alice@example.com" not in text
    assert orjson.loads(text)["dlp_findings"][0]["count"] == 2


def test_bodies_only_when_enabled() -> None:
    raw = ctx_record() | {"request_body": {"messages": [{"role": "user", "content": "[EMAIL]"}]}}
    assert "request_body" not in normalise(raw)
    assert normalise(raw, store_bodies=True)["request_body"] == raw["request_body"]


def test_wrong_types_become_none_and_a_request_id_is_made() -> None:
    rec = normalise({"status": "200", "started_at": "now", "latency_ms": True, "key_id": 7})
    assert rec["status"] is None and rec["started_at"] == 0.0 and rec["latency_ms"] is None
    assert rec["key_id"] == "7" and len(rec["request_id"]) == 32


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.none(), st.integers(), st.floats(), st.text()), max_size=8)
)
def test_canonical_bytes_do_not_depend_on_key_order(raw: dict[str, object]) -> None:
    rec = normalise(raw)
    reordered = dict(reversed(list(rec.items())))
    assert canonical(rec) == canonical(reordered)
    assert orjson.loads(canonical(rec))["request_id"] == rec["request_id"]


def test_access_log_line() -> None:
    line = access_log_line(ctx_record() | {"api_key": "sk-live"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    body = orjson.loads(line)
    assert body["request_id"] == "req-1" and body["status"] == 200 and body["model"] == "gpt-4o-mini"
    assert b"sk-live" not in line


def _ref_number(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        f = float(v) if -1e300 < v < 1e300 else math.nan
        return f if math.isfinite(f) else None
    return None


def _ref_text(v: object) -> str:
    s = v if isinstance(v, str) else str(v)
    if s.isascii() and "\x00" not in s:
        return s
    return s.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _reference_normalise(raw: dict[str, object]) -> dict[str, object]:
    """The scalar checks as first written (frozen here), one general check per field: the fast paths must agree."""
    rec = normalise(raw)  # attempts, findings, bodies: not under test here
    for k in FIELDS:
        v = raw.get(k)
        if k in ("started_at", "ended_at", "latency_ms", "upstream_ms", "upstream_ttfb_ms"):
            rec[k] = _ref_number(v)
        elif k == "status":
            ok = isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31
            rec[k] = v if ok else None
        elif k in ("prompt_tokens", "completion_tokens"):
            rec[k] = v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None
        elif k in ("key_id", "key_name", "requested_model", "served_by"):
            rec[k] = None if v is None else _ref_text(v)
    if rec["started_at"] is None:
        rec["started_at"] = rec["ended_at"] or 0.0
    return rec


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 1e299, 2.0**63, -0.0]),
    st.text(),
    st.sampled_from(["a\x00b", "\ud800", "é", "plain"]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([f for f in FIELDS if f != "request_id"]), _SCALARS, max_size=12))
def test_fast_paths_agree_with_the_general_checks(raw: dict[str, object]) -> None:
    raw = raw | {"request_id": "req-1"}
    got, want = normalise(raw), _reference_normalise(raw)
    assert canonical(got) == canonical(want)
