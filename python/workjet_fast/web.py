"""Small ASGI helpers shared by the routes: request ids, API key extraction, error responses."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.responses import Response

from workjet_fast.errors import GatewayError

__all__ = ["Message", "Receive", "Scope", "Send", "api_key_from", "error_response", "new_request_id"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_ids = itertools.count(1)
_ID_PREFIX = "req_" + os.urandom(6).hex()


def new_request_id() -> str:
    """Unique per process start (12 random hex digits) and then a counter: no syscall per request.

    Request ids are identifiers, not secrets; uvicorn starts workers by spawn, so each draws its own prefix."""
    return f"{_ID_PREFIX}{next(_ids):010x}"


def api_key_from(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer KEY` (OpenAI SDK) or `x-api-key: KEY` (Anthropic SDK habit)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    key = headers.get("x-api-key")
    return key.strip() if key else None


def error_response(e: GatewayError, request_id: str) -> Response:
    return Response(
        e.body(), status_code=e.status, media_type="application/json", headers={"x-request-id": request_id, **e.headers}
    )
