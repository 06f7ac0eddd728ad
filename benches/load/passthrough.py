"""A minimal Starlette pass-through: the upstream-client candidates and the "plain pass-through" baseline.

`python -m benches.load.passthrough --client aiohttp|httpx|httpx-tuned|native --upstream URL --port P`
(`native` is the gateway's own HTTP/1.1 client, `workjet_fast.providers.http1`.)
POST /v1/chat/completions is forwarded to URL/json/v1/... (or URL/sse/v1/... when the body asks for a stream)
and the answer relayed (streams chunk by chunk). No auth, no validation: the cost of the hop alone.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

POOL = 256


def make_app(client: str, upstream: str) -> Starlette:
    state: dict[str, Any] = {}

    def target(body: bytes) -> str:
        kind = "sse" if b'"stream":true' in body else "json"
        return f"{upstream}/{kind}/v1/chat/completions"

    headers = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}

    if client == "aiohttp":
        import aiohttp

        async def handle(request: Request) -> Response:
            body = await request.body()
            resp = await state["s"].post(target(body), data=body, headers=headers)
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):

                async def relay() -> AsyncIterator[bytes]:
                    try:
                        async for data in resp.content.iter_any():
                            yield data
                    finally:
                        resp.release()

                return StreamingResponse(relay(), status_code=resp.status, media_type=ctype)
            data = await resp.read()
            resp.release()
            return Response(data, status_code=resp.status, media_type=ctype)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            conn = aiohttp.TCPConnector(limit=POOL, limit_per_host=POOL, keepalive_timeout=30)
            state["s"] = aiohttp.ClientSession(connector=conn, skip_auto_headers=("User-Agent",))
            yield
            await state["s"].close()

    elif client == "native":
        from workjet_fast.config import ProviderConfig
        from workjet_fast.providers.http import HttpClient

        async def handle(request: Request) -> Response:
            body = await request.body()
            resp = await state["s"].post(target(body), headers, body)
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):

                async def relay() -> AsyncIterator[bytes]:
                    try:
                        async for data in resp.chunks():
                            yield data
                    finally:
                        resp.close()

                return StreamingResponse(relay(), status_code=resp.status, media_type=ctype)
            data = await resp.read()
            return Response(data, status_code=resp.status, media_type=ctype)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            state["s"] = HttpClient(ProviderConfig(name="up", type="openai", base_url=upstream, max_connections=POOL))
            yield
            await state["s"].aclose()

    else:
        import httpx

        async def handle(request: Request) -> Response:
            body = await request.body()
            c: httpx.AsyncClient = state["s"]
            resp = await c.send(c.build_request("POST", target(body), content=body, headers=headers), stream=True)
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):

                async def relay() -> AsyncIterator[bytes]:
                    try:
                        async for data in resp.aiter_raw():
                            yield data
                    finally:
                        await resp.aclose()

                return StreamingResponse(relay(), status_code=resp.status_code, media_type=ctype)
            data = await resp.aread()
            await resp.aclose()
            return Response(data, status_code=resp.status_code, media_type=ctype)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            if client == "httpx-tuned":
                limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL, keepalive_expiry=30)
                state["s"] = httpx.AsyncClient(limits=limits, timeout=60)
            else:  # the defaults most code uses: 100 connections, 20 kept alive
                state["s"] = httpx.AsyncClient(timeout=60)
            yield
            await state["s"].aclose()

    async def health(request: Request) -> Response:
        return Response(b"ok")

    routes = [Route("/v1/chat/completions", handle, methods=["POST"]), Route("/healthz", health)]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", choices=("aiohttp", "httpx", "httpx-tuned", "native"), required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    factory: Callable[[], Starlette] = lambda: make_app(a.client, a.upstream)  # noqa: E731
    uvicorn.run(
        factory,
        factory=True,
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
