"""`DlpEngine.request_clean` / `response_clean`: the request path's one-call answer for clean bodies.

True must mean exactly what the Python walk and `apply` would find: nothing (and the texts within the size limit).
False is always safe (the Python path then decides), so bodies of shapes the Rust walk does not read as the Python
walk does must get False, never True.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from tests.dlp_corpus import NEAR_MISSES, RULE_IDS, planted_examples
from workjet_fast._workjet_fast import DlpEngine, DlpPolicy
from workjet_fast.pipeline.dlp import _request_texts, _response_texts

ENGINES = [DlpEngine(engine="regex"), DlpEngine()]
PLAIN = DlpPolicy()
BIG = 1 << 30

_PIECES = [ex for _, ex, _ in planted_examples()] + [m for r in RULE_IDS for m in NEAR_MISSES[r]]
_text = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.text(alphabet="abcXYZ019 .:@=_-+/é\n", max_size=12)), max_size=4
).map("".join)
# Mostly clean texts, so that both answers are exercised.
_mostly_clean = st.one_of(
    _text, st.text(alphabet="abc xyz.,é\n", max_size=40), st.text(alphabet="abc xyz.,é\n", max_size=40)
)


def _python_clean(engine: DlpEngine, texts: list[str], policy: DlpPolicy, direction: str, max_bytes: int) -> bool:
    if sum(len(t) for t in texts) > max_bytes:
        return False
    return not engine.apply(texts, policy, direction).findings


_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _mostly_clean}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.just({"url": "https://x.example/a.png"})}),
)
_call = st.fixed_dictionaries({"id": st.just("c1"), "function": st.fixed_dictionaries({"arguments": _mostly_clean})})
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
    optional={
        "content": st.one_of(_mostly_clean, st.lists(_part, max_size=3), st.none()),
        "tool_calls": st.one_of(st.lists(_call, max_size=2), st.none()),
        "function_call": st.fixed_dictionaries({"arguments": _mostly_clean}),
        "name": _mostly_clean,
    },
)
_body = st.fixed_dictionaries({"model": st.just("m")}, optional={"messages": st.lists(_message, max_size=4)})
_choice = st.fixed_dictionaries(
    {"index": st.just(0)},
    optional={
        "message": st.fixed_dictionaries(
            {"role": st.just("assistant")},
            optional={"content": st.one_of(_mostly_clean, st.none()), "tool_calls": st.lists(_call, max_size=2)},
        )
    },
)
_result = st.fixed_dictionaries({"id": st.just("x")}, optional={"choices": st.lists(_choice, max_size=3)})


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.engine)
@settings(max_examples=200, deadline=None)
@given(body=_body, max_bytes=st.sampled_from([BIG, 40]))
def test_request_clean_is_the_python_answer(engine: DlpEngine, body: dict[str, Any], max_bytes: int) -> None:
    want = _python_clean(engine, _request_texts(body)[1], PLAIN, "request", max_bytes)
    got = engine.request_clean(body, PLAIN, max_bytes)
    if max_bytes == BIG:
        assert got == want
    else:  # the Rust side counts UTF-8 bytes, the Python side characters: it may only be stricter
        assert not got or want


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.engine)
@settings(max_examples=200, deadline=None)
@given(result=_result)
def test_response_clean_is_the_python_answer(engine: DlpEngine, result: dict[str, Any]) -> None:
    want = _python_clean(engine, _response_texts(result)[1], PLAIN, "response", BIG)
    assert engine.response_clean(result, PLAIN, BIG) == want


_SECRET = next(value for rule, _, value in planted_examples() if rule == "aws-access-key")  # blocked in requests


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": f"key {_SECRET}"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": f"key {_SECRET}"}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": f'{{"k": "{_SECRET}"}}'}}]}]},
        {"messages": [{"role": "assistant", "function_call": {"arguments": _SECRET}}]},
        {"messages": [{"role": "user", "content": "x" * 5000 + f" {_SECRET}"}]},  # scanned without the GIL
    ],
)
def test_a_finding_anywhere_the_upstream_reads_is_not_clean(body: dict[str, Any]) -> None:
    for engine in ENGINES:
        assert engine.apply(_request_texts(body)[1]).findings
        assert not engine.request_clean(body, PLAIN, BIG)


@pytest.mark.parametrize(
    "body",
    [
        [],  # not a dict
        {"messages": "hello"},  # the Python walk would iterate characters
        {"messages": {"role": "user"}},
        {"messages": ["hello"]},
        {"messages": [{"role": "user", "content": "ok", "tool_calls": "x"}]},
        {"messages": [{"role": "user", "content": "ok", "tool_calls": {}}]},
        {"messages": [{"role": "user", "content": "lone \ud800 surrogate"}]},
    ],
)
def test_shapes_the_python_walk_reads_differently_go_to_python(body: Any) -> None:
    for engine in ENGINES:
        assert engine.request_clean(body, PLAIN, BIG) is False


def test_clean_bodies_and_what_the_policy_allows() -> None:
    email = "jane.doe@example.com"
    body = {"messages": [{"role": "user", "content": "x" * 5000}, {"role": "user", "content": f"mail {email}"}]}
    allow = DlpPolicy(allow_values=[email])
    no_email = DlpPolicy(disabled=["email"])
    for engine in ENGINES:
        assert engine.request_clean({"model": "m"}, PLAIN, BIG)
        assert engine.request_clean({"messages": None}, PLAIN, BIG)
        assert engine.request_clean({"messages": [{"role": "user", "content": "plain words"}]}, PLAIN, BIG)
        assert not engine.request_clean(body, PLAIN, BIG)
        assert engine.request_clean(body, allow, BIG)
        assert engine.request_clean(body, no_email, BIG)
        assert not engine.request_clean(body, allow, 5000)  # over the size limit: the Python path reports it
        result = {"choices": [{"message": {"content": f"write to {email}"}}, "not a choice", {"message": None}]}
        assert not engine.response_clean(result, PLAIN, BIG)
        assert engine.response_clean(result, allow, BIG)
