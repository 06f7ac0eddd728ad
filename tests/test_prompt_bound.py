"""Admission on the body's length: the bound it relies on, and when the route counts the prompt (handler.BOUND_SHARE).

A prompt's tokens, as the gateway counts them, never exceed the request body's bytes: every token stands for at
least one byte of a text, a JSON escape decodes to no more bytes than it takes, and each message's JSON around its
strings is longer than the per-message overhead. The route admits on that bound when it is small beside the tpm
budget and counts the prompt only when it must.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from starlette.testclient import TestClient

from tests.conftest import WORKJET, base_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_dlp_e2e import CARD
from tests.test_limits import FakeClock
from workjet_fast import handler
from workjet_fast._workjet_fast import count_chat_tokens
from workjet_fast.app import create_app
from workjet_fast.config import load_settings
from workjet_fast.errors import BadRequest
from workjet_fast.pipeline.limits import MemoryLimiter, make_limiter
from workjet_fast.pipeline.route import Router
from workjet_fast.pipeline.validate import ROLES, parse_body, validate_chat

MODELS = ["gpt-4o", "gpt-4", "gpt-3.5-turbo-0301", "claude-4-sonnet"]  # o200k, cl100k, the old template, other
# Texts that tokenize badly: single bytes, escapes, astral characters, digits, whitespace runs, and any text.
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from('\x00\x01\n\t"\\/ \u00e9\u2028\U0001f600 0123456789{}[],:'), max_size=60),
    st.sampled_from(["", " ", "\x00", "\U0001f600", "1" * 50, " " * 50, '"' * 20, "\\" * 20]),
)


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        role = draw(st.sampled_from(sorted(ROLES)))
        msg: dict[str, Any] = {"role": role}
        shape = draw(st.sampled_from(["text", "parts", "calls"] if role == "assistant" else ["text", "parts"]))
        if shape == "text":
            msg["content"] = draw(TEXT)
        elif shape == "parts":
            parts = draw(st.lists(st.one_of(st.builds(lambda t: {"type": "text", "text": t}, TEXT),
                                            st.just({"type": "image_url", "image_url": {"url": "x"}})),
                                  max_size=3))  # fmt: skip
            msg["content"] = parts
        else:
            msg["content"] = None
            msg["tool_calls"] = [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": a}}
                for a in draw(st.lists(TEXT, min_size=1, max_size=2))
            ]
        if draw(st.booleans()):
            msg["name"] = draw(TEXT)
        out.append(msg)
    return out


@given(messages(), st.sampled_from(MODELS), st.booleans())
@example([{"role": "user", "content": ""}], "gpt-3.5-turbo-0301", False)  # the least JSON per message
@example([{"role": "user", "content": "\x00" * 30, "name": ""}], "gpt-4o", False)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_a_prompt_never_has_more_tokens_than_its_body_has_bytes(
    msgs: list[dict[str, Any]], model: str, ascii_escaped: bool
) -> None:
    doc = {"model": "m", "messages": msgs}
    # Both ways clients write JSON: UTF-8 as is (orjson, most SDKs) and everything escaped to ASCII (json.dumps).
    raw = json.dumps(doc, separators=(",", ":")).encode() if ascii_escaped else orjson.dumps(doc)
    body = parse_body(raw)
    validate_chat(body)
    assert count_chat_tokens(handler._chat_texts(body["messages"]), model) <= len(raw)


# ---- the route ----------------------------------------------------------------------------------------------------


def _client(tmp_path: Path, fake: FakeOpenAI, tpm: int) -> tuple[TestClient, dict[str, str]]:
    limits = f"limits:\n  backend: memory\n  default: {{tpm: {tpm}}}\n  completion_estimate: 512\n"
    cfg = tmp_path / "workjet.yaml"
    cfg.write_text(base_config(fake.base_url, tmp_path, limits))
    created = subprocess.run([WORKJET, "keys", "create", "--name", "t", "--config", str(cfg)],
                             capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return TestClient(create_app(load_settings(cfg))), {"authorization": f"Bearer {created.stdout.strip()}"}


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeOpenAI) -> list[int]:
    """Each prompt count the route makes, as the number of upstream requests made before it."""
    made: list[int] = []

    def spy(texts: list[tuple[str, str, str | None]], model: str) -> int:
        made.append(len(fake_upstream.requests))
        return count_chat_tokens(texts, model)

    monkeypatch.setattr("workjet_fast.handler.count_chat_tokens", spy)
    return made


def _remaining(r: Any) -> int:
    return int(r.headers["x-ratelimit-remaining-tokens"])


def test_a_roomy_budget_admits_on_the_bound_and_charges_the_provider_usage(
    tmp_path: Path, fake_upstream: FakeOpenAI, counts: list[int]
) -> None:
    tpm = 10_000_000
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50})
    assert len(raw) * handler.BOUND_SHARE <= tpm
    client, auth = _client(tmp_path, fake_upstream, tpm)
    with client as c:
        first = c.post("/v1/chat/completions", content=raw, headers=auth)
        assert first.status_code == 200
        assert counts == []  # never counted: admitted on the bound, settled on the provider's usage
        assert _remaining(first) == tpm - (len(raw) + 50)
        used = first.json()["usage"]["total_tokens"]
        second = c.post("/v1/chat/completions", content=raw, headers=auth)
        # The first request's reservation was replaced by its usage (the bucket refills at tpm/60 per second).
        assert tpm - used - (len(raw) + 50) <= _remaining(second) <= tpm - used - (len(raw) + 50) + tpm // 60
        streamed = c.post(
            "/v1/chat/completions", content=raw[:-1] + b',"stream":true}', headers=auth
        )  # no include_usage: the provider reports none, so the gateway counts after the response
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert counts == [3]


def test_a_tight_budget_counts_before_the_call(tmp_path: Path, fake_upstream: FakeOpenAI, counts: list[int]) -> None:
    tpm = 10_000
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50})
    assert len(raw) * handler.BOUND_SHARE > tpm
    client, auth = _client(tmp_path, fake_upstream, tpm)
    with client as c:
        r = c.post("/v1/chat/completions", content=raw, headers=auth)
    assert r.status_code == 200
    assert counts == [0]  # counted before the upstream request
    exact = count_chat_tokens([("user", "hello", None)], "gpt-4o-mini")
    assert _remaining(r) == tpm - (exact + 50)


def test_a_redacted_prompt_is_counted_before_the_call(
    tmp_path: Path, fake_upstream: FakeOpenAI, counts: list[int]
) -> None:
    """Redaction can make a text longer than the body's bytes allowed for; the count is then made first."""
    client, auth = _client(tmp_path, fake_upstream, 10_000_000)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"card {CARD}"}], "max_tokens": 50}
    with client as c:
        r = c.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 200 and r.headers["x-workjet-dlp"] == "redacted"
    assert counts == [0]


def _frozen_limiter(monkeypatch: pytest.MonkeyPatch) -> list[MemoryLimiter]:
    made: list[MemoryLimiter] = []

    def make(*a: Any) -> Any:
        lim = make_limiter(*a)
        assert isinstance(lim, MemoryLimiter)
        lim._clock = FakeClock()  # the bucket does not refill between the requests of a test
        made.append(lim)
        return lim

    monkeypatch.setattr("workjet_fast.gateway.make_limiter", make)
    return made


def test_a_bound_refused_near_the_end_of_the_budget_is_decided_on_the_count(
    tmp_path: Path, fake_upstream: FakeOpenAI, counts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _frozen_limiter(monkeypatch)
    tpm = 200_000
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10})
    assert len(raw) * handler.BOUND_SHARE <= tpm
    exact = count_chat_tokens([("user", "hello", None)], "gpt-4o-mini")
    client, auth = _client(tmp_path, fake_upstream, tpm)

    def leave(lim: MemoryLimiter, tokens: int) -> None:  # the key's budget has `tokens` left
        (key,) = lim._tpm_tat
        lim._tpm_tat[key] = lim._clock() + (tpm - tokens) * 60 / tpm

    with client as c:
        assert c.post("/v1/chat/completions", content=raw, headers=auth).status_code == 200
        (lim,) = made
        assert counts == []
        leave(lim, 50)  # the bound's reservation (len + 10) does not fit; the count's (exact + 10) does
        assert exact + 10 <= 50 < len(raw) + 10
        fits = c.post("/v1/chat/completions", content=raw, headers=auth)
        assert fits.status_code == 200 and counts == [1]  # counted once, before the upstream call
        assert _remaining(fits) == 50 - (exact + 10)
        leave(lim, exact + 9)  # now the count does not fit either
        refused = c.post("/v1/chat/completions", content=raw, headers=auth)
        assert refused.status_code == 429 and "tokens per minute" in refused.json()["error"]["message"]
        assert counts == [1, 2] and lim.stats()["rejected_tokens"] == 1


def test_a_prompt_admitted_on_its_bound_is_counted_when_no_provider_was_reached(
    tmp_path: Path, fake_upstream: FakeOpenAI, counts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_: Any) -> Any:  # e.g. a provider's request conversion refusing the body
        raise BadRequest("not for this provider")

    monkeypatch.setattr(Router, "complete", refuse)
    client, auth = _client(tmp_path, fake_upstream, 10_000_000)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    with client as c:
        r = c.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 400 and fake_upstream.requests == []
    assert counts == [0]  # counted after the failure, as the counted path would have before the call
