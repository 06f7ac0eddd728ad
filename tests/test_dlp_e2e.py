"""DLP end to end through the real gateway: request policies, JSON and streamed responses, overrides."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayFactory, GatewayProc
from tests.dlp_corpus import planted_examples
from tests.fakes.openai_upstream import FakeOpenAI

CARD = "4111 1111 1111 1111"
AWS = "AKIAZ3MPLQ7RT2VWX4YB"

DLP_CONFIG = """
dlp:
  hmac_key: test-hmac-key
  allow:
    values: ["4242 4242 4242 4242"]
  request:
    EMAIL: log
  tiers:
    premium:
      request: {CREDIT_CARD: block}
  keys:
    lenient:
      request: {AWS_ACCESS_KEY: redact}
"""


def post(gw: GatewayProc, body: dict[str, object], key: str | None = None) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key or gw.keys['default']}"},
        timeout=10,
    )


@pytest.fixture
def dlp_gateway(gateway_factory: GatewayFactory) -> GatewayProc:
    gw = gateway_factory(DLP_CONFIG)
    gw.keys["default"] = gw.create_key("default")
    gw.keys["lenient"] = gw.create_key("lenient")
    return gw


def test_secret_in_request_is_blocked_and_never_echoed(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    r = post(dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"my key is {AWS}"}]})
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "dlp_blocked" and "AWS_ACCESS_KEY" in err["message"]
    assert AWS not in r.text
    assert fake_upstream.requests == []  # the upstream was never called


def test_secrets_in_system_prompt_and_tool_arguments_are_scanned(dlp_gateway: GatewayProc) -> None:
    system = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": AWS}, {"role": "user", "content": "hi"}],
    }
    assert post(dlp_gateway, system).status_code == 403
    tool = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": f'{{"k": "{AWS}"}}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
    }
    assert post(dlp_gateway, tool).status_code == 403
    parts = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": AWS}]}]}
    assert post(dlp_gateway, parts).status_code == 403


def test_pii_in_request_is_redacted_before_the_upstream(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    r = post(dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"card {CARD} thanks"}]})
    assert r.status_code == 200
    sent = fake_upstream.requests[-1].body["messages"][0]["content"]
    assert sent == "card [REDACTED:CREDIT_CARD] thanks"
    assert r.headers["x-workjet-dlp"] == "redacted"


def test_log_action_forwards_unchanged(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.reply = "noted"  # the default echo would carry the e-mail back (redacted in responses)
    r = post(dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail ana@example.org"}]})
    assert r.status_code == 200
    assert fake_upstream.requests[-1].body["messages"][0]["content"] == "mail ana@example.org"
    assert r.headers["x-workjet-dlp"] == "logged"


def test_allow_list_value_passes(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    r = post(
        dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "test 4242 4242 4242 4242"}]}
    )
    assert r.status_code == 200 and r.headers["x-workjet-dlp"] == "clean"
    assert fake_upstream.requests[-1].body["messages"][0]["content"] == "test 4242 4242 4242 4242"


def test_tier_and_key_overrides(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    r = post(dlp_gateway, {"model": "premium", "messages": [{"role": "user", "content": f"card {CARD}"}]})
    assert r.status_code == 403 and "CREDIT_CARD" in r.json()["error"]["message"]
    r = post(dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"k {AWS}"}]},
             key=dlp_gateway.keys["lenient"])  # fmt: skip
    assert r.status_code == 200
    assert fake_upstream.requests[-1].body["messages"][0]["content"] == "k [REDACTED:AWS_ACCESS_KEY]"


def test_json_response_is_redacted(dlp_gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.reply = f"here is a key {AWS} for you"
    r = post(dlp_gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "here is a key [REDACTED:AWS_ACCESS_KEY] for you"
    assert r.headers["x-workjet-dlp"] == "redacted"


def test_over_size_text_fails_closed(gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI) -> None:
    gw = gateway_factory("dlp:\n  max_scan_bytes: 1000\n", name="small")
    key = gw.create_key("k")
    r = post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2000}]}, key=key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "dlp_blocked"
    assert "could not be scanned" in r.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_over_size_text_fails_open_when_configured(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory("dlp:\n  max_scan_bytes: 1000\n  fail_mode: open\n", name="open")
    key = gw.create_key("k")
    r = post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2000}]}, key=key)
    assert r.status_code == 200


def _stream_text(client: httpx.Client, gw: GatewayProc, model: str) -> str:
    import orjson

    out = []
    with client.stream(
        "POST",
        gw.v1 + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True},
        headers={"authorization": f"Bearer {gw.keys['default']}"},
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                for c in chunk.get("choices") or ():
                    out.append((c.get("delta") or {}).get("content") or "")
    return "".join(out)


def test_a_secret_split_at_any_position_never_reaches_the_client(
    gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI
) -> None:
    """Every built-in example, cut into two stream deltas at every position: the value never leaves whole."""
    cuts = "\n".join(f"  cut{i}: {{provider: fake, model: 'cut:{i}'}}" for i in range(400))
    gw = gateway_factory("", config_text=None, name="cuts")
    gw.stop()
    text = gw.config.read_text().replace("models:\n", "models:\n" + cuts + "\n", 1)
    from tests.conftest import start_gateway

    gw = start_gateway(text, gw.data_dir)
    try:
        gw.keys["default"] = gw.create_key("default")
        with httpx.Client(timeout=10) as client:
            for rule, example, value in planted_examples():
                reply = f"Sure: {example} -- done."
                fake_upstream.reply = reply
                assert len(reply) < 400
                for cut in range(len(reply) + 1):
                    got = _stream_text(client, gw, f"cut{cut}")
                    assert value not in got, (rule, cut)
                    assert "[REDACTED:" in got, (rule, cut)
                    assert got.startswith("Sure: ") and got.endswith(" -- done."), (rule, cut)
    finally:
        gw.stop()


def test_dlp_header_says_off_when_dlp_is_disabled(gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI) -> None:
    gw = gateway_factory("dlp:\n  enabled: false\n", name="off")
    key = gw.create_key("k")
    r = post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"k {AWS}"}]}, key=key)
    assert r.status_code == 200 and r.headers["x-workjet-dlp"] == "off"
    assert fake_upstream.requests[-1].body["messages"][0]["content"] == f"k {AWS}"
