"""Rate limits end to end: real gateway processes under uvicorn, the fake upstream, the official OpenAI SDK."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import GatewayFactory, GatewayProc, base_config
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("WORKJET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MSG = [{"role": "user", "content": "hello"}]


def chat(gw: GatewayProc, key: str, model: str = "gpt-4o-mini", **body: object) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": model, "messages": MSG, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def eventually_admitted(gw: GatewayProc, key: str, within: float = 20.0) -> httpx.Response:
    """Retry until a request is not refused by the concurrency limit (a release may lag the client's close)."""
    deadline = time.monotonic() + within
    while True:
        r = chat(gw, key)
        if r.status_code != 429 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def assert_slot_is_enforced(gw: GatewayProc, key: str) -> None:
    """With a concurrency limit of 1: while one stream is in flight another request is refused."""
    body = {"model": "slow", "messages": MSG, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST", gw.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status_code == 200
            chunks = resp.iter_raw()  # keep the iterator: dropping it closes the response
            assert next(chunks)  # the stream is flowing
            held = chat(gw, key)
            assert held.status_code == 429 and "concurrent requests" in held.json()["error"]["message"]
            assert held.headers["retry-after"] == "1"


@pytest.fixture
def redis_limits() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached: {e}")
    return f"""
limits:
  backend: redis
  redis_url: {REDIS_URL}
  redis_prefix: "test:e2e:{uuid.uuid4().hex}:"
"""


def two_gateways(
    gateway_factory: GatewayFactory, fake: FakeOpenAI, tmp_path: Path, extra: str, *key_args: str
) -> tuple[GatewayProc, GatewayProc, str]:
    """Two gateway processes with one key store (one SQLite file) and one Redis, and a key both know from the
    start (created between the two starts: a gateway loads every key when it starts)."""
    shared = f"sqlite:///{tmp_path}/shared.db"
    gws = []
    key = ""
    for name in ("a", "b"):
        data = tmp_path / name
        text = base_config(fake.base_url, data, extra).replace(f"sqlite:///{data}/workjet.db", shared)
        gws.append(gateway_factory(config_text=text, name=name))
        key = key or gws[0].create_key("shared", *key_args)
    return gws[0], gws[1], key


def test_two_gateways_sharing_redis_admit_exactly_the_limit(
    gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI, tmp_path: Path, redis_limits: str
) -> None:
    a, b, key = two_gateways(gateway_factory, fake_upstream, tmp_path, redis_limits, "--rpm", "5")
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: chat((a, b)[i % 2], key), range(16)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 11
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert "requests per minute" in r.json()["error"]["message"]
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-limit-requests"] == "5"
        else:
            assert r.headers["x-ratelimit-limit-requests"] == "5"
            assert int(r.headers["x-ratelimit-remaining-requests"]) < 5


def test_two_gateways_share_one_concurrency_limit(
    gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI, tmp_path: Path, redis_limits: str
) -> None:
    a, b, key = two_gateways(gateway_factory, fake_upstream, tmp_path, redis_limits, "--concurrency", "3")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "slow", "messages": MSG, "stream": True}
    with httpx.Client(timeout=30) as http:
        streams = []
        for i in range(5):  # slow streams stay in flight until closed
            s = http.stream("POST", (a, b)[i % 2].v1 + "/chat/completions", json=body, headers=headers)
            streams.append((s, s.__enter__()))
        statuses = sorted(resp.status_code for _, resp in streams)
        for s, _ in streams:
            s.__exit__(None, None, None)
    assert statuses == [200, 200, 200, 429, 429]
    assert eventually_admitted(b, key).status_code == 200  # every slot came back when the clients left


def test_concurrency_slot_is_released_after_upstream_failure(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    key = gw.create_key("one", "--concurrency", "1")
    assert_slot_is_enforced(gw, key)
    assert eventually_admitted(gw, key).status_code == 200
    assert chat(gw, key, model="broken").status_code == 502
    assert chat(gw, key, model="down").status_code in (502, 503)
    assert chat(gw, key).status_code == 200


def test_concurrency_slot_is_released_after_client_disconnect(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    key = gw.create_key("one", "--concurrency", "1")
    assert_slot_is_enforced(gw, key)  # leaves by closing the stream mid-way
    assert eventually_admitted(gw, key).status_code == 200


def test_rpm_refusal_carries_retry_after_for_the_sdk(gateway_factory: GatewayFactory) -> None:
    """rpm=30 refills one request every 2 s, so `Retry-After` is 1 or 2."""
    gw = gateway_factory()
    key = gw.create_key("sdk", "--rpm", "30")
    for _ in range(100):  # the burst is 30; a slow machine may see a refill or two on the way
        refused = chat(gw, key)
        if refused.status_code == 429:
            break
    assert refused.status_code == 429 and "requests per minute" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] in ("1", "2")
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    impatient = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(5):  # again: a refill may let one through
            impatient.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] in ("1", "2")
    assert info.value.code == "rate_limited"


def test_sdk_retry_honours_retry_after(gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI) -> None:
    """A concurrency refusal says `Retry-After: 1`. The held stream is closed when the SDK receives its 429, so
    the SDK's one retry, a second later, finds the slot free."""
    gw = gateway_factory()
    key = gw.create_key("sdk", "--concurrency", "1")
    body = {"model": "slow", "messages": MSG, "stream": True}
    refusals: list[httpx.Response] = []
    with httpx.Client(timeout=30) as http:
        held = http.stream("POST", gw.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        resp = held.__enter__()
        assert resp.status_code == 200
        chunks = resp.iter_raw()  # keep the iterator: dropping it closes the response
        assert next(chunks)

        def on_response(r: httpx.Response) -> None:
            if r.status_code == 429 and not refusals:
                refusals.append(r)
                held.__exit__(None, None, None)  # the other request ends while the SDK waits Retry-After

        sdk_http = httpx.Client(event_hooks={"response": [on_response]}, timeout=30)
        patient = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=1, http_client=sdk_http)
        upstream_before = len(fake_upstream.requests)
        raw = patient.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
        sdk_http.close()
    assert len(refusals) == 1 and refusals[0].headers["retry-after"] == "1"
    assert raw.retries_taken == 1
    assert raw.parse().choices[0].message.content == "You said: hello"
    assert len(fake_upstream.requests) == upstream_before + 1  # the refused attempt never reached the provider


def test_token_limit_counts_prompt_and_completion(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory("limits:\n  completion_estimate: 100\n")
    key = gw.create_key("tokens", "--tpm", "1000")
    first = chat(gw, key, max_tokens=50)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    remaining = int(first.headers["x-ratelimit-remaining-tokens"])
    assert 900 <= remaining < 1000  # the prompt plus at most 50 reserved completion tokens
    too_big = chat(gw, key, messages=[{"role": "user", "content": "word " * 3000}])
    assert too_big.status_code == 429 and "Request too large" in too_big.json()["error"]["message"]
