"""End to end through a real uvicorn gateway, with the official OpenAI SDK as the client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.conftest import GatewayProc
from tests.fakes.openai_upstream import FakeOpenAI

MSG = [{"role": "user", "content": "hello gateway"}]


def client(gw: GatewayProc, key: str | None = None, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key or gw.keys["default"], max_retries=0, **kw)  # type: ignore[arg-type]


def test_sdk_non_streaming(gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    resp = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"  # the public id, not the provider's name
    assert resp.choices[0].message.content == "You said: hello gateway"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == 11
    sent = fake_upstream.requests[-1]
    assert sent.body["model"] == "upstream-mini"
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret-value"


def test_sdk_streaming(gateway: GatewayProc) -> None:
    stream = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MSG,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello gateway"
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_sdk_async_both_ways(gateway: GatewayProc) -> None:
    async def run() -> tuple[str, str]:
        c = openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.keys["default"], max_retries=0)
        r = await c.chat.completions.create(model="standard", messages=MSG)  # type: ignore[arg-type]
        s = await c.chat.completions.create(model="standard", messages=MSG, stream=True)  # type: ignore[arg-type]
        parts = [ch.choices[0].delta.content or "" async for ch in s if ch.choices]
        await c.close()
        return r.choices[0].message.content or "", "".join(parts)

    full, streamed = asyncio.run(run())
    assert full == streamed == "You said: hello gateway"


@pytest.mark.parametrize("model", ["split1", "split7"])
def test_upstream_frames_split_anywhere_are_relayed_whole(gateway: GatewayProc, model: str) -> None:
    stream = client(gateway).chat.completions.create(model=model, messages=MSG, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "You said: hello gateway"


def test_pass_through_fields_and_cap(gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    c = client(gateway)
    c.chat.completions.create(
        model="standard",
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=5000,
        seed=7,
        stop=["\n"],
        response_format={"type": "text"},
        user="u-1",
        extra_body={"vendor_field": {"x": 1}},
    )
    sent = fake_upstream.requests[-1].body
    assert sent["max_tokens"] == 100  # the tier's cap
    assert sent["seed"] == 7 and sent["stop"] == ["\n"] and sent["response_format"] == {"type": "text"}
    assert sent["user"] == "u-1" and sent["vendor_field"] == {"x": 1}
    c.chat.completions.create(model="standard", messages=MSG)  # type: ignore[arg-type]
    assert fake_upstream.requests[-1].body["max_tokens"] == 100  # none asked: the cap
    c.chat.completions.create(model="standard", messages=MSG, max_tokens=7)  # type: ignore[arg-type]
    assert fake_upstream.requests[-1].body["max_tokens"] == 7  # lower than the cap: unchanged


def test_request_id_and_overhead_headers(gateway: GatewayProc) -> None:
    r = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MSG},
        headers={"authorization": f"Bearer {gateway.keys['default']}"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert float(r.headers["x-workjet-overhead-ms"]) >= 0
    # A JSON answer has its length up front, as OpenAI's do, not chunked framing.
    assert int(r.headers["content-length"]) == len(r.content) and "transfer-encoding" not in r.headers


def test_x_api_key_header_is_accepted(gateway: GatewayProc) -> None:
    r = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MSG},
        headers={"x-api-key": gateway.keys["default"]},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("broken", 502, "provider_error"), ("down", 503, "provider_unavailable"), ("stall", 503, "provider_unavailable")],
)
def test_upstream_failures_map_to_502_and_503(gateway: GatewayProc, model: str, status: int, code: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == code
    assert "secret" not in str(body)  # provider credentials never reach the client


def test_mid_stream_failure_becomes_an_sse_error_event(gateway: GatewayProc) -> None:
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        json={"model": "breaker", "messages": MSG, "stream": True},
        headers={"authorization": f"Bearer {gateway.keys['default']}"},
        timeout=10,
    ) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert '"code":"provider_error"' in text
    assert text.rstrip().endswith("data: [DONE]")
