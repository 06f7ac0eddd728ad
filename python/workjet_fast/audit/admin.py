"""The admin HTTP API for the audit log: `GET /admin/audit` and `GET /admin/audit/stats`.

Authenticated with the admin token (`Authorization: Bearer <server.admin_token>`), which is separate
from API keys; without a configured token the routes answer 404. Errors use the OpenAI envelope.

`GET /admin/audit?since=&until=&key=&model=&status=&request_id=&limit=&cursor=` returns
`{"object": "list", "data": [records, newest first], "has_more": bool, "next_cursor": str | null}`;
pass `next_cursor` back as `cursor` for the next page.
"""

from __future__ import annotations

import hmac

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from workjet_fast.audit import AuditLog
from workjet_fast.audit.store import Filters, InvalidCursor, parse_status, parse_time
from workjet_fast.errors import error_body
from workjet_fast.storage.db import StorageError

__all__ = ["MAX_LIMIT", "routes"]

MAX_LIMIT = 1000


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=str), status, media_type="application/json")


def _error(status: int, message: str, type_: str, code: str, param: str | None = None) -> Response:
    return Response(error_body(message, type_, code, param), status, media_type="application/json")


def _filters(request: Request) -> Filters:
    q = request.query_params
    if q.get("status"):
        parse_status(q["status"])  # raises ValueError with a readable message, like parse_time
    return Filters(
        since=parse_time(q["since"]) if q.get("since") else None,
        until=parse_time(q["until"]) if q.get("until") else None,
        key=q.get("key") or None,
        model=q.get("model") or None,
        status=q.get("status") or None,
        request_id=q.get("request_id") or None,
    )


def routes(audit_log: AuditLog, admin_token: str) -> list[Route]:
    """Routes for the application; every one answers 404 when `admin_token` is empty."""
    expected = f"Bearer {admin_token}".encode()

    def denied(request: Request) -> Response | None:
        if not admin_token:
            return _error(404, "Not found", "invalid_request_error", "not_found")
        got = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, expected):
            return _error(401, "A valid admin token is required", "authentication_error", "unauthorized")
        return None

    async def list_records(request: Request) -> Response:
        if (resp := denied(request)) is not None:
            return resp
        try:
            filters = _filters(request)
            limit = int(request.query_params.get("limit", "100"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        except ValueError as e:
            return _error(400, str(e), "invalid_request_error", "bad_request")
        cursor = request.query_params.get("cursor") or None
        try:
            data, nxt = await run_in_threadpool(audit_log.reader.query, filters, limit, cursor)
        except InvalidCursor:
            return _error(400, "invalid cursor", "invalid_request_error", "bad_request", "cursor")
        except StorageError:
            return _error(503, "The audit database is unavailable", "server_error", "audit_unavailable")
        return _json({"object": "list", "data": data, "has_more": nxt is not None, "next_cursor": nxt})

    async def stats(request: Request) -> Response:
        if (resp := denied(request)) is not None:
            return resp
        return _json({"object": "audit.stats", "chain_id": audit_log.chain_id, **audit_log.stats()})

    return [
        Route("/admin/audit", list_records, methods=["GET"]),
        Route("/admin/audit/stats", stats, methods=["GET"]),
    ]
