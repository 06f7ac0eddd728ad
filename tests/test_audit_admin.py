"""GET /admin/audit: admin-token authentication, filters, cursor pagination, errors in the OpenAI envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.test_audit_store import fill
from workjet_fast.audit import AuditLog, admin
from workjet_fast.audit.store import AuditStore
from workjet_fast.config.audit import AuditConfig

TOKEN = "admin-secret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def audit_log(tmp_path: Path) -> Iterator[AuditLog]:
    url = f"sqlite:///{tmp_path}/audit.db"
    store = AuditStore.open(url)
    store.migrate()
    fill(store, 30)
    store.close()
    log = AuditLog.open(AuditConfig(spill_path=str(tmp_path / "spill.jsonl")), url)
    log.start()
    yield log
    log.close()


def client(audit_log: AuditLog, token: str = TOKEN) -> TestClient:
    return TestClient(Starlette(routes=admin.routes(audit_log, token)))


def test_requires_the_admin_token(audit_log: AuditLog) -> None:
    with client(audit_log) as c:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            r = c.get("/admin/audit", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.json()["error"]["type"] == "authentication_error"


def test_disabled_without_a_token(audit_log: AuditLog) -> None:
    with client(audit_log, token="") as c:
        r = c.get("/admin/audit", headers={"authorization": "Bearer "})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_filters_and_cursor_pagination(audit_log: AuditLog) -> None:
    with client(audit_log) as c:
        seen: list[str] = []
        params: dict[str, str] = {"status": "2xx", "key": "k1", "limit": "5"}
        while True:
            body = c.get("/admin/audit", params=params, headers=AUTH).json()
            assert body["object"] == "list"
            seen += [r["request_id"] for r in body["data"]]
            if not body["has_more"]:
                assert body["next_cursor"] is None
                break
            params["cursor"] = body["next_cursor"]
        assert seen == [f"req-{i:05d}" for i in range(29, 0, -2) if i % 5]


def test_time_window_and_model(audit_log: AuditLog) -> None:
    with client(audit_log) as c:
        params = {"since": "1700000010", "until": "2023-11-14T22:13:40Z", "model": "premium"}
        body = c.get("/admin/audit", params=params, headers=AUTH).json()
        assert [r["request_id"] for r in body["data"]] == ["req-00018", "req-00015", "req-00012"]


def test_bad_parameters_are_400(audit_log: AuditLog) -> None:
    with client(audit_log) as c:
        for params in ({"limit": "0"}, {"limit": "x"}, {"status": "abc"}, {"since": "soon"}, {"cursor": "bad"}):
            r = c.get("/admin/audit", params=params, headers=AUTH)
            assert r.status_code == 400, params
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_stats(audit_log: AuditLog) -> None:
    audit_log.submit({"request_id": "live"})
    with client(audit_log) as c:
        body = c.get("/admin/audit/stats", headers=AUTH).json()
        assert body["object"] == "audit.stats" and body["queued"] == 1 and body["dropped"] == 0
        assert body["chain_id"] == audit_log.chain_id
