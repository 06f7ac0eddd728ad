"""The admin API beside the audit routes: health (circuits, limiter, audit) and per-key limits."""

from __future__ import annotations

import json

import httpx

from tests.conftest import GatewayProc

ADMIN = {"authorization": "Bearer test-admin-token"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _key_id(gw: GatewayProc, name: str) -> str:
    keys = json.loads(gw.cli("keys", "list", "--format", "json").stdout)
    return str(next(k["id"] for k in keys if k["name"] == name))


def test_admin_sets_a_keys_limits_and_the_gateway_enforces_them(gateway: GatewayProc) -> None:
    key_id = _key_id(gateway, "default")
    url = f"{gateway.url}/admin/keys/{key_id}/limits"
    auth = {"authorization": f"Bearer {gateway.keys['default']}"}

    r = httpx.put(url, json={"rpm": 1}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["limits"] == {"rpm": 1}
    assert httpx.get(url, headers=ADMIN).json()["limits"] == {"rpm": 1}

    first = httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers=auth)
    second = httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers=auth)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["code"] == "rate_limited"

    r = httpx.put(url, json={"rpm": None}, headers=ADMIN)  # null removes the limit
    assert r.status_code == 200 and r.json()["limits"] == {}
    assert httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers=auth).status_code == 200


def test_admin_limits_reject_bad_input_and_bad_tokens(gateway: GatewayProc) -> None:
    url = f"{gateway.url}/admin/keys/{_key_id(gateway, 'default')}/limits"
    for bad in ({"rpm": -1}, {"rpm": "ten"}, {"burst": 3}, [1, 2]):
        r = httpx.put(url, json=bad, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", bad
    assert httpx.put(url, content=b"{nope", headers=ADMIN).status_code == 400
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{gateway.url}/admin/keys/key_nope/limits", headers=ADMIN).status_code == 404


def test_admin_health_shows_circuits_limiter_and_audit(gateway: GatewayProc) -> None:
    httpx.post(
        gateway.v1 + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {gateway.keys['default']}"}
    )
    h = httpx.get(gateway.url + "/admin/health", headers=ADMIN).json()
    assert h["deployments"]["fake/upstream-mini"]["state"] == "closed"
    assert h["limiter"]["admitted"] >= 1
    assert h["audit"]["dropped"] == 0
    assert httpx.get(gateway.url + "/admin/health").status_code == 401
