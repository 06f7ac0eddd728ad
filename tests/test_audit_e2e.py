"""The audit log through the real gateway: every request (accepted or rejected) is recorded, readable over the
admin API, counted in /metrics, and what the gateway had counted as written survives a SIGKILL under load."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProc
from workjet_fast.audit import AuditLog, verify
from workjet_fast.audit.store import AuditStore, Filters
from workjet_fast.config import load_settings

pytestmark = pytest.mark.slow
ADMIN = {"authorization": "Bearer test-admin-token"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def audited(gw: GatewayProc, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30  # bounds a hung test only
    while True:
        r = httpx.get(gw.url + "/admin/audit", params={"request_id": request_id}, headers=ADMIN)
        assert r.status_code == 200, r.text
        if r.json()["data"]:
            (rec,) = r.json()["data"]
            return dict(rec)
        assert time.monotonic() < deadline, f"{request_id} never reached the audit log"
        time.sleep(0.05)


def test_every_request_is_audited(gateway: GatewayProc) -> None:
    key = gateway.keys["default"]
    with httpx.Client(base_url=gateway.v1) as c:
        ok = c.post("/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        bad_key = c.post("/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-wrong"})
        bad_json = c.post("/chat/completions", content=b"{", headers={"authorization": f"Bearer {key}"})
    assert (ok.status_code, bad_key.status_code, bad_json.status_code) == (200, 401, 400)

    rec = audited(gateway, ok.headers["x-request-id"])
    assert rec["status"] == 200 and rec["requested_model"] == "gpt-4o-mini" and rec["key_name"] == "default"
    assert rec["attempts"][0]["outcome"] == "ok" and rec["prompt_tokens"] is not None
    assert audited(gateway, bad_key.headers["x-request-id"])["status"] == 401
    assert audited(gateway, bad_json.headers["x-request-id"])["status"] == 400

    stats = httpx.get(gateway.url + "/admin/audit/stats", headers=ADMIN).json()
    assert stats["dropped"] == 0 and stats["written"] >= 3
    text = httpx.get(gateway.url + "/metrics").text
    assert 'workjet_requests_total{status="401"' in text and "workjet_audit_written_total" in text
    assert httpx.get(gateway.url + "/admin/audit", headers={"authorization": "Bearer nope"}).status_code == 401


def test_written_records_survive_sigkill_under_load(gateway: GatewayProc) -> None:
    key = gateway.keys["default"]
    stop = threading.Event()
    done: list[str] = []

    def load() -> None:
        with httpx.Client(base_url=gateway.v1) as c:
            i = 0
            while not stop.is_set():
                auth = f"Bearer {key}" if i % 4 == 0 else "Bearer sk-wrong"
                try:
                    r = c.post("/chat/completions", json=CHAT, headers={"authorization": auth})
                except httpx.HTTPError:
                    return  # the gateway was killed
                done.append(r.headers["x-request-id"])
                i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            stats = httpx.get(gateway.url + "/admin/audit/stats", headers=ADMIN).json()
            if stats["written"] + stats["spilled"] >= 300:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.02)
        durable = stats["written"] + stats["spilled"]
        gateway.stop(signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join()

    settings = load_settings(gateway.config)
    log = AuditLog.open(settings.audit, settings.storage_url)  # a restart: replays any orphan spill file
    log.start()
    assert log.close()
    store = AuditStore.open(settings.audit.url or settings.storage_url)
    try:
        ids = [r["request_id"] for r in store.export(Filters())]
        report = verify(store, settings.audit.checkpoint_key)
    finally:
        store.close()
    assert report.ok, report.problems
    assert len(ids) == len(set(ids))  # nothing twice
    assert len(ids) >= durable  # everything the gateway had counted as written or spilled
    assert len(done) >= 300 and set(done[:100]) <= set(ids)  # answered long before the kill: recorded


def test_bodies_are_kept_only_on_opt_in_and_after_redaction(gateway_factory: Any) -> None:
    gw = gateway_factory("audit:\n  store_bodies: true\n", name="bodies")
    key = gw.create_key("b")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}
    r = httpx.post(gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    rec = audited(gw, r.headers["x-request-id"])
    sent = rec["request_body"]["messages"][0]["content"]
    assert sent == "card [REDACTED:CREDIT_CARD]"
    assert "4111" not in str(rec)
    assert rec["dlp_findings"][0]["entity"] == "CREDIT_CARD" and rec["dlp_state"] == "redacted"


def test_bodies_are_not_kept_by_default(gateway: GatewayProc) -> None:
    r = httpx.post(
        gateway.v1 + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {gateway.keys['default']}"}
    )
    rec = audited(gateway, r.headers["x-request-id"])
    assert "request_body" not in rec and "response_body" not in rec
