"""A client that goes away mid-stream cancels the upstream request; the gateway keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayProc, wait_for
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow

MSG = [{"role": "user", "content": "tick tock"}]


def test_client_disconnect_cancels_upstream(gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {gateway.keys['default']}"}
    body = {"model": "slow", "messages": MSG, "stream": True}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            seen = b""
            for chunk in r.iter_raw():
                seen += chunk
                if seen.count(b"tick ") >= 3:
                    break
        # leaving both blocks closes the connection with the stream unfinished
    assert b"data: " in seen and b"tick 0" in seen
    assert wait_for(lambda: fake_upstream.disconnects == 1), "the upstream never saw the client go away"
    assert fake_upstream.completed_streams == 0

    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        r = c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "You said: tick tock"
        with c.stream("POST", "/v1/chat/completions", json={**body, "model": "gpt-4o-mini"}) as s:
            text = s.read()
        assert text.rstrip().endswith(b"data: [DONE]")
    assert fake_upstream.completed_streams == 1
    assert fake_upstream.disconnects == 1
    # Access log lines are flushed at least every 0.5 s (gateway.ACCESS_FLUSH_SECONDS).
    assert wait_for(lambda: '"status":499' in gateway.output() and '"error_code":"client_closed"' in gateway.output())


def test_repeated_disconnects_leave_no_stuck_streams(gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {gateway.keys['default']}"}
    body = {"model": "slow", "messages": MSG, "stream": True}
    for _ in range(5):
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                next(r.iter_raw())
    assert wait_for(lambda: fake_upstream.disconnects == 5), f"disconnects seen: {fake_upstream.disconnects}"
    # Every request that ended by a disconnect was counted off (the audit writer's yields go by this count).
    assert wait_for(lambda: "workjet_requests_in_flight 0\n" in httpx.get(gateway.url + "/metrics").text)
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        assert c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG}).status_code == 200


def test_disconnect_is_not_logged_as_a_crash(gateway: GatewayProc, fake_upstream: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {gateway.keys['default']}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json={"model": "slow", "messages": MSG, "stream": True}) as r:
            next(r.iter_raw())
    assert wait_for(lambda: fake_upstream.disconnects == 1)
    assert wait_for(lambda: '"status":499' in gateway.output())
    assert "Traceback" not in gateway.output()
