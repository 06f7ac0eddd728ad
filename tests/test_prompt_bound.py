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
from workjet_fast import handler
from workjet_fast._workjet_fast import count_chat_tokens
from workjet_fast.app import create_app
from workjet_fast.config import load_settings
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
