"""The ASGI application: the hot route is plain ASGI, the rest is Starlette.

`POST /v1/chat/completions` runs the request path in order:
auth -> read body (size cap) -> validate -> route -> DLP (request) -> limits -> provider -> DLP (response,
streamed through the Rust relay) -> audit. Every response carries `x-request-id`; every error is
OpenAI's envelope (`errors.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from workjet_fast.config import Settings
from workjet_fast.context import RequestContext
from workjet_fast.errors import GatewayError, MethodNotAllowed, NotFound
from workjet_fast.gateway import Gateway
from workjet_fast.handler import ChatHandler
from workjet_fast.web import Message, Receive, Scope, Send, api_key_from, error_response, new_request_id

__all__ = ["create_app"]

log = logging.getLogger("workjet.app")

CHAT_PATH = "/v1/chat/completions"


def create_app(settings: Settings, *, freeze_gc: bool = False) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Build the gateway's ASGI app from validated settings. `freeze_gc`: once started, move every object that
    exists to the collector's permanent generation (`gc.freeze()`) and return the C heap's free pages to the OS:
    what `workjet serve` does, see Gateway."""
    gateway = Gateway(settings, freeze_gc=freeze_gc)
    chat = ChatHandler(gateway)

    async def models(request: Request) -> Response:
        ctx = RequestContext(request_id=new_request_id(), path="/v1/models")
        try:
            key = await gateway.keys.authenticate(api_key_from(request.headers))
            ctx.key_id, ctx.key_name = key.id, key.name
            data = gateway.list_models(key)
            ctx.finish(200)
            return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": ctx.request_id})
        except GatewayError as e:
            ctx.finish(e.status, e.code)
            return error_response(e, ctx.request_id)
        finally:
            gateway.audit_submit(ctx)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = await gateway.readiness()
        status = 200 if not problems else 503
        return JSONResponse({"status": "ready" if not problems else "not ready", "problems": problems}, status)

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics_text(), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception | None = None) -> Response:
        e = NotFound(f"Unknown route: {request.method} {request.url.path}")
        return error_response(e, new_request_id())

    routes = [
        HttpRoute("/v1/models", models, methods=["GET"]),
        HttpRoute("/healthz", healthz, methods=["GET"]),
        HttpRoute("/readyz", readyz, methods=["GET"]),
        HttpRoute("/metrics", metrics, methods=["GET"]),
        *gateway.admin_routes(),
    ]
    starlette = Starlette(routes=routes, lifespan=gateway.lifespan)
    # Starlette awaits only handlers that are coroutine functions; a lambda returning a coroutine breaks (500).
    starlette.add_exception_handler(404, not_found)
    starlette.add_exception_handler(405, _method_not_allowed)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH:
            if scope["method"] == "POST":
                await chat(scope, receive, send)
            else:
                e = MethodNotAllowed(
                    f"Method {scope['method']} is not allowed on {CHAT_PATH}; use POST.", headers={"allow": "POST"}
                )
                await error_response(e, new_request_id())(scope, receive, send)
            return
        if scope["type"] != "http":
            await starlette(scope, receive, send)
            return
        request_id = new_request_id().encode()

        async def send_with_id(message: Message) -> None:
            # Every response carries x-request-id: routes that set their own keep it, the rest get one here.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id))
                    message["headers"] = headers
            await send(message)

        await starlette(scope, receive, send_with_id)

    app.gateway = gateway  # type: ignore[attr-defined]
    return app


async def _method_not_allowed(request: Request, exc: Exception | None = None) -> Response:
    e = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    allow = getattr(exc, "headers", None) or {}
    if "Allow" in allow:
        e.headers["allow"] = allow["Allow"]
    return error_response(e, new_request_id())
