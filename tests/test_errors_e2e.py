"""Error paths through the real gateway: status, OpenAI's error envelope and `x-request-id` on every one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayProc, base_config, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI, free_port

pytestmark = pytest.mark.slow

MSG = [{"role": "user", "content": "hello"}]
BODY = {"model": "gpt-4o-mini", "messages": MSG}
SMALL_LIMIT = 2048


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["code"] == code
    assert err["param"] == param
    return err


def key_id(gw: GatewayProc, name: str) -> str:
    listed = orjson.loads(gw.cli("keys", "list", "--format", "json").stdout)
    (rec,) = [r for r in listed if r["name"] == name]
    return str(rec["id"])


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProc]:
    """One gateway for the module (errors leave no state behind): a 2 KiB body limit and a 1 s key refresh."""
    fake = FakeOpenAI().start()
    tmp = tmp_path_factory.mktemp("errors")
    text = base_config(fake.base_url, tmp).replace(
        "  admin_token: test-admin-token\n",
        f"  admin_token: test-admin-token\n  max_body_bytes: {SMALL_LIMIT}\nauth:\n  refresh_seconds: 1\n",
    )
    gw = start_gateway(text, tmp)
    try:
        gw.keys["default"] = gw.create_key("default")
        yield gw
    finally:
        gw.stop()
        fake.stop()
    assert "Traceback" not in gw.output()


@pytest.fixture
def http(small_gateway: GatewayProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_gateway.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer sk-not-a-workjet-key"},
        {"authorization": "Bearer wj_live_short"},
        {"authorization": "Bearer wj_live_" + "!" * 40},
        {"x-api-key": "wj_live_" + "a" * 40},  # well formed, unknown
        {"authorization": "Bearer wj_live_" + "Z" * 40},
    ],
    ids=["missing", "empty-bearer", "basic", "foreign", "short", "bad-chars", "unknown-x-api-key", "unknown"],
)
def test_401_for_missing_malformed_unknown_key(http: httpx.Client, headers: dict[str, str]) -> None:
    assert_error(http.post("/v1/chat/completions", json=BODY, headers=headers), 401, "unauthorized")
    assert_error(http.get("/v1/models", headers=headers), 401, "unauthorized")


def test_revoked_key_rejected_within_refresh_bound(small_gateway: GatewayProc, http: httpx.Client) -> None:
    key = small_gateway.create_key("doomed")
    assert http.post("/v1/chat/completions", json=BODY, headers=auth(key)).status_code == 200
    small_gateway.cli("keys", "revoke", key_id(small_gateway, "doomed"))
    # auth.refresh_seconds (1 s here, at most 5 s) bounds how long a revoked key keeps working; 10 s is a
    # generous deadline for that correctness bound, not a performance threshold.
    deadline = time.monotonic() + 10
    while True:
        r = http.post("/v1/chat/completions", json=BODY, headers=auth(key))
        if r.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert_error(r, 401, "unauthorized")
    assert_error(http.get("/v1/models", headers=auth(key)), 401, "unauthorized")
    assert http.post("/v1/chat/completions", json=BODY, headers=auth(small_gateway.keys["default"])).status_code == 200


def test_unknown_model_is_400_param_model(small_gateway: GatewayProc, http: httpx.Client) -> None:
    body = {**BODY, "model": "no-such-model"}
    assert_error(http.post("/v1/chat/completions", json=body, headers=auth(small_gateway.keys["default"])), 400,
                 "bad_request", "model")  # fmt: skip


def test_validation_error_names_the_param(small_gateway: GatewayProc, http: httpx.Client) -> None:
    body = {**BODY, "temperature": 3}
    r = http.post("/v1/chat/completions", json=body, headers=auth(small_gateway.keys["default"]))
    assert_error(r, 400, "bad_request", "temperature")


def test_restricted_key_gets_403_for_other_tier(small_gateway: GatewayProc, http: httpx.Client) -> None:
    key = small_gateway.create_key("mini-only", "--models", "gpt-4o-mini")
    r = http.post("/v1/chat/completions", json={**BODY, "model": "standard"}, headers=auth(key))
    assert_error(r, 403, "model_not_allowed", "model")
    r = http.post("/v1/chat/completions", json={**BODY, "model": "slow"}, headers=auth(key))
    assert_error(r, 403, "model_not_allowed", "model")
    assert http.post("/v1/chat/completions", json=BODY, headers=auth(key)).status_code == 200


def test_models_lists_only_what_the_key_may_use(small_gateway: GatewayProc, http: httpx.Client) -> None:
    everything = http.get("/v1/models", headers=auth(small_gateway.keys["default"]))
    assert everything.status_code == 200 and everything.headers["x-request-id"].startswith("req_")
    ids = {m["id"] for m in everything.json()["data"]}
    assert {"gpt-4o-mini", "broken", "slow", "capped", "standard", "premium"} <= ids
    key = small_gateway.create_key("scoped", "--models", "gpt-4o-mini", "--tiers", "premium")
    r = http.get("/v1/models", headers=auth(key))
    assert r.status_code == 200
    listed = r.json()
    assert listed["object"] == "list"
    assert sorted((m["id"], m["owned_by"]) for m in listed["data"]) == [
        ("gpt-4o-mini", "workjet"),
        ("premium", "workjet-tier"),
    ]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listed["data"])


def test_413_with_content_length(small_gateway: GatewayProc, http: httpx.Client) -> None:
    body = orjson.dumps({**BODY, "messages": [{"role": "user", "content": "x" * (SMALL_LIMIT * 2)}]})
    r = http.post("/v1/chat/completions", content=body, headers=auth(small_gateway.keys["default"]))
    assert_error(r, 413, "payload_too_large")
    # just under the limit is fine
    fits = orjson.dumps({**BODY, "messages": [{"role": "user", "content": "x" * (SMALL_LIMIT - 200)}]})
    assert len(fits) <= SMALL_LIMIT
    assert (
        http.post("/v1/chat/completions", content=fits, headers=auth(small_gateway.keys["default"])).status_code == 200
    )


def test_413_with_chunked_transfer(small_gateway: GatewayProc, http: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}]}'

    with http.stream(
        "POST", "/v1/chat/completions", content=pieces(), headers=auth(small_gateway.keys["default"])
    ) as r:
        r.read()
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")

    def small() -> Iterator[bytes]:
        yield orjson.dumps(BODY)

    r = http.post("/v1/chat/completions", content=small(), headers=auth(small_gateway.keys["default"]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/models"), ("PUT", "/healthz"), ("DELETE", "/readyz")])
def test_wrong_method_is_405(http: httpx.Client, method: str, path: str) -> None:
    assert_error(http.request(method, path), 405, "method_not_allowed")


def test_wrong_method_on_chat_path_is_405(http: httpx.Client) -> None:
    r = http.get("/v1/chat/completions")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/", "/v1", "/v1/completions", "/v2/chat/completions", "/healthz/x"])
def test_unknown_path_is_404(http: httpx.Client, path: str) -> None:
    assert_error(http.get(path), 404, "not_found")
    assert_error(http.post(path, json=BODY), 404, "not_found")


def test_health_and_readiness(http: httpx.Client) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = http.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "problems": []}


def test_unreachable_postgres_storage_fails_start_up(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    """Storage on a closed port: the gateway cannot migrate or load keys, so it refuses to start (it never
    serves a 503 /readyz: there is no process to answer). The failure must be a clear message."""
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    text = base_config(fake_upstream.base_url, tmp_path).replace(
        f"url: sqlite:///{tmp_path}/workjet.db", f"url: {dead}"
    )
    assert dead in text
    with pytest.raises(RuntimeError, match="gateway exited with") as info:
        start_gateway(text, tmp_path)
    assert "cannot open postgresql://" in str(info.value)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/nope"), ("GET", "/admin/health")],
)
def test_every_response_carries_a_request_id(http: httpx.Client, method: str, path: str) -> None:
    r = http.request(method, path)
    assert r.headers["x-request-id"].startswith("req_")
