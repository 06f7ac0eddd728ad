"""`audit_record`, the request path's one Rust call for the audit and access logs, against the Python reference.

For any context it either returns exactly what `normalise` + `canonical` + `access_log_line` + `columns` make
of `ctx.record()`, or None (the gateway then takes that Python path). Ordinary contexts must take the fast path.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from starlette.testclient import TestClient

from tests.conftest import WORKJET, base_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_dlp_e2e import CARD, DLP_CONFIG
from workjet_fast import _workjet_fast
from workjet_fast._workjet_fast import audit_record
from workjet_fast.app import create_app
from workjet_fast.audit.chain import Chain
from workjet_fast.audit.record import access_log_line, canonical, columns, normalise
from workjet_fast.audit.store import AuditStore, Filters
from workjet_fast.config import load_settings
from workjet_fast.context import Attempt, RequestContext


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types, the sign of zero included (`-0.0 == 0.0` and `True == 1` in Python)."""
    return bool(a == b) and repr(a) == repr(b)


def reference(ctx: RequestContext) -> tuple[str, bytes, tuple[Any, ...]]:
    raw = ctx.record()
    rec = normalise(raw)
    return canonical(rec).decode(), access_log_line(raw), columns(rec)


def ordinary() -> RequestContext:
    ctx = RequestContext(request_id="wj-8f3a-000001", client="127.0.0.1", path="/v1/chat/completions")
    ctx.key_id, ctx.key_name, ctx.requested_model, ctx.route_kind = "k_1", "team", "standard", "tier"
    ctx.served_by, ctx.served_model = "openai/gpt-4o-mini", "gpt-4o-mini"
    ctx.attempts.append(Attempt("anthropic/claude", "error", 529, 3.25, "overloaded"))
    ctx.attempts.append(Attempt("openai/gpt-4o-mini", "ok", 200, 0.5))
    ctx.dlp_findings.append({"rule_id": "email", "entity": "EMAIL", "count": 2, "direction": "request",
                             "action": "redact", "value_hmacs": ["ab12"]})  # fmt: skip
    ctx.dlp_state = "redacted"
    ctx.prompt_tokens, ctx.prompt_tokens_source = 250, "gateway"
    ctx.completion_tokens, ctx.completion_tokens_source = 70, "provider"
    ctx.finish_reason, ctx.upstream_ttfb_ms, ctx.upstream_ms = "stop", 0.31, 0.42
    ctx.finish(200)
    return ctx


def test_an_ordinary_context_takes_the_fast_path_and_matches() -> None:
    ctx = ordinary()
    made = audit_record(ctx, True)
    assert made is not None
    assert same(made, reference(ctx))
    text, line, cols = made
    assert "ab12" not in text  # a finding's value HMACs are not part of the record
    assert orjson.loads(text)["attempts"][0]["error"] == "overloaded"
    assert line is not None and line.endswith(b"\n")
    assert cols == ("wj-8f3a-000001", ctx.started_at, "k_1", "team", "standard", "openai/gpt-4o-mini", 200)


def test_the_gateway_audits_its_requests_by_the_fast_path(
    tmp_path: Path, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real requests through the app: success, stream, DLP findings, and errors all take the Rust call, and
    the records it made are stored and read back."""
    cfg = tmp_path / "workjet.yaml"
    cfg.write_text(base_config(fake_upstream.base_url, tmp_path, DLP_CONFIG))
    created = subprocess.run([WORKJET, "keys", "create", "--name", "t", "--config", str(cfg)],
                             capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    auth = {"authorization": f"Bearer {created.stdout.strip()}"}
    made: list[Any] = []

    def spy(ctx: RequestContext, access: bool) -> Any:
        made.append(_workjet_fast.audit_record(ctx, access))
        want = reference(ctx)
        assert made[-1] is not None and same(made[-1], (want[0], want[1] if access else None, want[2]))
        return made[-1]

    monkeypatch.setattr("workjet_fast.gateway.audit_record", spy)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi, mail ana@example.org"}]}
    with TestClient(create_app(load_settings(cfg))) as c:
        statuses = [
            c.post("/v1/chat/completions", json=chat, headers=auth).status_code,
            c.post("/v1/chat/completions", json=chat | {"stream": True}, headers=auth).status_code,
            c.post("/v1/chat/completions", json=chat | {"model": "premium"}, headers=auth).status_code,  # fallback
            c.post("/v1/chat/completions", json=chat | {"model": "broken"}, headers=auth).status_code,
            c.post("/v1/chat/completions", json=chat, headers={"authorization": "Bearer nope"}).status_code,
            c.post("/v1/chat/completions", content=b"{", headers=auth).status_code,
            c.post(
                "/v1/chat/completions", json=chat | {"messages": [{"role": "user", "content": CARD}]}, headers=auth
            ).status_code,  # fmt: skip
        ]
    assert statuses == [200, 200, 200, 502, 401, 400, 200]
    assert len(made) == len(statuses) and all(m is not None for m in made)
    texts = {orjson.loads(m[0])["request_id"]: m[0] for m in made}
    assert {orjson.loads(t)["dlp_state"] for t in texts.values()} >= {"logged", "redacted", "clean"}
    store = AuditStore.open(f"sqlite:///{tmp_path}/workjet.db")
    try:
        rows, _ = store.query(Filters(), limit=100)
    finally:
        store.close()
    assert {r["request_id"] for r in rows} == set(texts)


def test_without_the_access_log_no_line_is_made() -> None:
    made = audit_record(ordinary(), False)
    assert made is not None and made[1] is None


def test_rows_from_either_path_are_the_same() -> None:
    ctx = ordinary()
    made = audit_record(ctx, False)
    assert made is not None
    fast = Chain("c").link_prepared([(made[2], made[0])])
    slow = Chain("c").link([normalise(ctx.record())])
    assert fast == slow


@pytest.mark.parametrize(
    "change",
    [
        {"started_at": None},  # takes ended_at
        {"started_at": -0.0},  # its column is `float(-0.0 or 0.0)`, which drops the sign
        {"started_at": 0.0},
        {"latency_ms": 12},  # an int becomes a float
        {"upstream_ms": 1e301},  # out of range: None
        {"ended_at": math.nan},
        {"status": True},
        {"status": 2**31},
        {"prompt_tokens": -1},
        {"completion_tokens": 2**63},
        {"key_id": "clé"},  # indexed text that is not plain ASCII goes through `_text`
        {"served_by": "a\x00b"},
        {"request_id": ""},  # a new id is made
        {"client": "\ud800"},  # a lone surrogate
        {"user": 2**70},
        {"path": b"bytes"},
        {"request_body": {"messages": []}},
        {"finish_reason": 1.5e400},
    ],
)
def test_values_normalise_would_change_take_the_python_path(change: dict[str, Any]) -> None:
    ctx = ordinary()
    for k, v in change.items():
        setattr(ctx, k, v)
    assert audit_record(ctx, True) is None


def test_odd_list_items_take_the_python_path() -> None:
    ctx = ordinary()
    ctx.dlp_findings.append(["not", "a", "dict"])  # type: ignore[arg-type]
    assert audit_record(ctx, True) is None
    ctx = ordinary()
    ctx.attempts[0].latency_ms = object()  # type: ignore[assignment]
    assert audit_record(ctx, True) is None
    ctx = ordinary()
    ctx.attempts = ({"deployment": "x"},)  # type: ignore[assignment]  # not a list
    assert audit_record(ctx, True) is None
    ctx = ordinary()
    ctx.attempts = [{"deployment": "x", "outcome": "ok"}]  # type: ignore[list-item]  # `ctx.record()` raises on it
    assert audit_record(ctx, True) is None
    ctx = ordinary()
    ctx.dlp_findings = [Attempt("x", "ok")]  # type: ignore[list-item]  # findings are dicts
    assert audit_record(ctx, True) is None


_SCALAR_FIELDS = ("client", "path", "user", "route_kind", "served_model", "error_code", "prompt_tokens_source",
                  "completion_tokens_source", "finish_reason", "dlp_state", "stream")  # fmt: skip
_TEXT_FIELDS = ("key_id", "key_name", "requested_model", "served_by")
_NUMBER_FIELDS = ("ended_at", "latency_ms", "upstream_ms", "upstream_ttfb_ms")
_FINDING_KEYS = ["rule_id", "entity", "count", "direction", "action", "value_hmacs"]


@st.composite
def contexts(
    draw: st.DrawFn,
    *,
    ids: st.SearchStrategy[str],
    scalars: st.SearchStrategy[Any],
    texts: st.SearchStrategy[Any],
    numbers: st.SearchStrategy[Any],
    starts: st.SearchStrategy[Any],
    statuses: st.SearchStrategy[Any],
    counts: st.SearchStrategy[Any],
) -> RequestContext:
    """A finished context whose fields are drawn from the given strategies; attempts and findings from `scalars`."""
    ctx = RequestContext(request_id=draw(ids), started_at=draw(starts))
    for name in _SCALAR_FIELDS:
        setattr(ctx, name, draw(scalars))
    for name in _TEXT_FIELDS:
        setattr(ctx, name, draw(texts))
    for name in _NUMBER_FIELDS:
        setattr(ctx, name, draw(numbers))
    ctx.status = draw(statuses)
    ctx.prompt_tokens, ctx.completion_tokens = draw(counts), draw(counts)
    for _ in range(draw(st.integers(0, 3))):
        ctx.attempts.append(Attempt(*(draw(scalars) for _ in range(5))))
    for _ in range(draw(st.integers(0, 3))):
        ctx.dlp_findings.append({k: draw(scalars) for k in draw(st.sets(st.sampled_from(_FINDING_KEYS)))})
    return ctx


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
)
floats = st.one_of(st.floats(), st.floats(min_value=1e-9, max_value=1e18), st.integers(0, 10**6), st.none())
any_contexts = contexts(
    ids=st.one_of(st.text(min_size=1), st.just("wj-1"), st.just("")),
    scalars=scalars,
    texts=st.one_of(st.none(), st.text(alphabet=st.characters(max_codepoint=0x7F)), st.text()),
    numbers=floats,
    starts=floats,
    statuses=st.one_of(st.integers(-(2**33), 2**33), st.sampled_from([200, 429, 502]), st.none()),
    counts=st.one_of(st.none(), st.integers(min_value=-5, max_value=2**64)),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(any_contexts)
@example(ordinary())
def test_any_context_matches_the_reference_or_falls_back(ctx: RequestContext) -> None:
    made = audit_record(ctx, True)
    try:
        want = reference(ctx)
    except Exception:  # the reference itself cannot make it (e.g. an int beyond 64 bits in a list)
        assert made is None
        return
    if made is not None:
        assert same(made, want)


plain_text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F))
plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),  # anything but lone surrogates
)
plain_numbers = st.floats(min_value=-9.9e299, max_value=9.9e299)


# Contexts holding only values `normalise` keeps as they are: these must all take the fast path.
plain_contexts = contexts(
    ids=plain_text.filter(bool),
    scalars=plain_scalars,
    texts=st.one_of(st.none(), plain_text),
    numbers=st.one_of(st.none(), plain_numbers),
    starts=plain_numbers.filter(bool),  # a zero start takes the Python path
    statuses=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    counts=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
)


@st.composite
def nearly_plain_contexts(draw: st.DrawFn) -> RequestContext:
    """A plain context with one or two fields set to any value: most fall back, the rest must match."""
    ctx = draw(plain_contexts)
    fields = ("request_id", "started_at", *_SCALAR_FIELDS, *_TEXT_FIELDS, *_NUMBER_FIELDS, "status",
              "prompt_tokens", "completion_tokens")  # fmt: skip
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2)):
        setattr(ctx, name, draw(st.one_of(scalars, floats, plain_numbers, st.just(-0.0))))
    return ctx


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(nearly_plain_contexts())
def test_a_context_with_an_odd_field_matches_the_reference_or_falls_back(ctx: RequestContext) -> None:
    made = audit_record(ctx, True)
    if made is not None:
        assert same(made, reference(ctx))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(plain_contexts)
def test_contexts_of_plain_values_take_the_fast_path_and_match(ctx: RequestContext) -> None:
    made = audit_record(ctx, True)
    assert made is not None
    assert same(made, reference(ctx))


@settings(max_examples=800)
@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-9.9e299, max_value=9.9e299),
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=1),
)
def test_floats_and_strings_in_the_fast_path_are_written_as_orjson_writes_them(x: float, s: str, rid: str) -> None:
    assume("\x00" not in rid)
    ctx = ordinary()
    ctx.request_id, ctx.latency_ms, ctx.upstream_ttfb_ms, ctx.attempts[0].latency_ms = rid, x, x / 3, x * 7
    try:
        s.encode()
    except UnicodeEncodeError:
        return  # lone surrogates: the Python path
    ctx.finish_reason = ctx.client = s
    ctx.ended_at = abs(x)
    made = audit_record(ctx, True)
    assert made is not None  # every value here is one the fast path takes
    assert same(made, reference(ctx))
