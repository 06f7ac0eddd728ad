"""DLP engine through the Python API: the corpus, both engines agreeing, redaction, policies and streaming."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from tests.dlp_corpus import NEAR_MISSES, RULE_IDS, planted_examples
from workjet_fast._workjet_fast import DlpEngine, DlpError, DlpPolicy, DlpStream

REGEX = DlpEngine(engine="regex")
AUTO = DlpEngine()
ENGINES = [REGEX, AUTO]


def _found(engine: DlpEngine, text: str) -> list[tuple[str, str]]:
    return [(f.rule_id, text[f.start : f.end]) for f in engine.scan(text)]


def test_corpus_covers_every_builtin_rule() -> None:
    assert sorted(REGEX.rule_ids) == sorted(RULE_IDS)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.engine)
@pytest.mark.parametrize(("rule", "example", "value"), planted_examples())
def test_examples_match(engine: DlpEngine, rule: str, example: str, value: str) -> None:
    text = f"Voilà — here: {example} (ok)."
    assert (rule, value) in _found(engine, text)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.engine)
@pytest.mark.parametrize(("rule", "miss"), [(r, m) for r in RULE_IDS for m in NEAR_MISSES[r]])
def test_near_misses_do_not_match(engine: DlpEngine, rule: str, miss: str) -> None:
    assert rule not in [r for r, _ in _found(engine, f"Voilà — here: {miss} (ok).")]


def test_offsets_are_chars_and_bytes() -> None:
    text = "héllo jane.doe@example.com"
    (f,) = REGEX.scan(text)
    assert (f.rule_id, f.entity, text[f.start : f.end]) == ("email", "EMAIL", "jane.doe@example.com")
    assert text.encode()[f.byte_start : f.byte_end] == b"jane.doe@example.com"


def test_redact_merges_and_keeps_utf8() -> None:
    text = "é 4111 1111 1111 1111 ü jane.doe@example.com"
    assert REGEX.redact(text, REGEX.scan(text)) == "é [REDACTED:CREDIT_CARD] ü [REDACTED:EMAIL]"


def test_apply_one_call_per_request() -> None:
    policy = DlpPolicy(hmac_key=b"k")
    res = REGEX.apply(["mail jane.doe@example.com", "nothing here"], policy)
    assert not res.blocked
    assert res.texts == ["mail [REDACTED:EMAIL]", "nothing here"]
    assert res.findings == [("email", "EMAIL", "redact", 1)]
    assert res.value_hmacs is not None and len(res.value_hmacs[0][1]) == 64
    clean = REGEX.apply(["nothing here"])
    assert (clean.blocked, clean.texts, clean.findings, clean.value_hmacs) == (False, None, [], None)
    secret = REGEX.apply(["token ghp_ZyXwVuTsRqPoNmLkJiHgFeDcBa0123456789"])
    assert secret.blocked and secret.findings == [("github-token", "GITHUB_TOKEN", "block", 1)]


def test_policy_actions_allow_lists_and_disabled() -> None:
    text = "jane.doe@example.com bob@example.org 536-22-8146"
    policy = DlpPolicy(actions={"us-ssn": "log"}, allow_values=["jane.doe@example.com"], allow_patterns=[r"bob@.*"])
    res = REGEX.apply([text], policy)
    assert res.texts is None and res.findings == [("us-ssn", "US_SSN", "log", 1)]
    assert REGEX.apply([text], DlpPolicy(disabled=["email", "us-ssn"])).findings == []
    with pytest.raises(DlpError, match="nuke"):
        DlpPolicy(actions={"email": "nuke"})


def test_custom_rules() -> None:
    rules = [{"id": "ticket", "entity": "TICKET", "pattern": r"\bTCK-[0-9]{6}\b", "action": "redact", "max_len": 10}]
    engine = DlpEngine(json.dumps(rules), engine="regex")
    assert engine.apply(["see TCK-123456"]).texts == ["see [REDACTED:TICKET]"]
    with pytest.raises(DlpError, match="broken-rule"):
        DlpEngine(json.dumps([{"id": "broken-rule", "entity": "X", "pattern": "ab(c"}]))
    with pytest.raises(DlpError, match="engine"):
        DlpEngine(engine="nope")


def _stream_all(stream: DlpStream, chunks: list[str]) -> str:
    return "".join(stream.push(c) for c in chunks) + stream.finish()


def _expected(engine: DlpEngine, text: str) -> str:
    res = engine.apply([text], direction="response")
    return text if res.texts is None else res.texts[0]


def test_stream_releases_prose_at_once_and_catches_split_secret() -> None:
    s = REGEX.stream()
    assert s.push("Plain prose. ") == "Plain prose. "
    out = s.push("key sk-ant-api03-") + s.push("x" * 0) + s.finish()
    assert out == "key sk-ant-api03-"
    rule, example, _ = next(p for p in planted_examples() if p[0] == "anthropic-key")
    text = f"the key is {example} done"
    for i in range(len(text) + 1):
        s = REGEX.stream()
        assert _stream_all(s, [text[:i], text[i:]]) == "the key is [REDACTED:ANTHROPIC_KEY] done"
        assert s.findings == [(rule, "ANTHROPIC_KEY", "redact", None)]


def test_stream_block() -> None:
    s = REGEX.stream(DlpPolicy(actions={"email": "block"}))
    out = _stream_all(s, ["hi jane.doe@exa", "mple.com and more"])
    assert (out, s.blocked) == ("hi ", True)


_PIECES = [ex for _, ex, _ in planted_examples()] + [m for r in RULE_IDS for m in NEAR_MISSES[r]]
_texts = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.text(alphabet="abcXYZ019 .:@=_-+/é\n", max_size=12)), max_size=6
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=_texts)
def test_engines_agree(text: str) -> None:
    assert _found(AUTO, text) == _found(REGEX, text)


@settings(max_examples=150, deadline=None)
@given(text=_texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=5))
def test_any_chunking_gives_the_batch_result(text: str, cuts: list[int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert _stream_all(AUTO.stream(), chunks) == _expected(AUTO, text)
