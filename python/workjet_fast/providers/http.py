"""The pooled upstream HTTP client, behind one small interface so it can change.

`HttpClient(config)` is the entry point: `post(url, headers, body) -> StreamBody` and `aclose()`. It picks the
transport from the provider's options:

- HTTP/1.1 (the default): `http1.py`, asyncio protocols and httptools' parser, chosen by measurement
  (benches/RESULTS.md, "Upstream client"): httpx's pool collapses under concurrency (encode/httpx#3215, ~420
  req/s for a Starlette pass-through at 32 connections on this machine), aiohttp does ~4,000 but was still 30%
  of the gateway's CPU under load. `http_client: aiohttp` keeps aiohttp selectable (`http_aiohttp.py`).
- HTTP/2 (`http2: true` or `http2: prior_knowledge`): httpx with the `h2` package, in `http2.py`.

A `StreamBody` is a response whose headers arrived. `close()` on an unfinished body never returns the
connection (HTTP/1.1) or the stream (HTTP/2) to the pool in a state where the upstream keeps sending.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Protocol

from workjet_fast.config import ProviderConfig

__all__ = ["HttpClient", "StreamBody", "aclose_iterator", "retry_after_box"]


class StreamBody(ABC):
    """A response whose headers arrived; iterate `chunks()` for body pieces as the network delivers them."""

    status: int
    headers: Mapping[str, str]

    @abstractmethod
    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive; raises `UpstreamFailure` (unreachable) when the stream breaks."""

    @abstractmethod
    def close(self) -> None:
        """Abandon the body: an unfinished one never goes back to the pool."""


async def aclose_iterator(it: AsyncIterator[bytes]) -> None:
    """Close an async generator that a loop left unfinished (`break`, an error, or its own closing), now. Left to the
    garbage collector, the event loop's finalizer hook closes it instead: a `call_soon_threadsafe` (a wake-up write
    and read) and a new task, once per stream, just as the next request may be arriving."""
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


class _Transport(Protocol):
    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody: ...

    async def aclose(self) -> None: ...


class HttpClient:
    """A provider's pooled client: HTTP/1.1 (`http1.py`, or aiohttp when `config.http_client` says so), or HTTP/2
    over httpx when `config.http2`."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._transport: _Transport
        if config.http2:
            try:
                from workjet_fast.providers.http2 import Http2Transport  # optional dependency: httpx[http2]
            except ImportError as e:
                raise RuntimeError(
                    f"provider {config.name!r} sets http2, which needs httpx[http2] installed ({e})"
                ) from None
            self._transport = Http2Transport(config)
        elif config.http_client == "aiohttp":
            try:
                from workjet_fast.providers.http_aiohttp import AiohttpTransport  # optional dependency: aiohttp
            except ImportError as e:
                raise RuntimeError(
                    f"provider {config.name!r} sets http_client: aiohttp, which needs aiohttp installed ({e})"
                ) from None
            self._transport = AiohttpTransport(config)
        else:
            from workjet_fast.providers.http1 import Http1Transport

            self._transport = Http1Transport(config)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody:
        """POST and wait for the response headers (at most `timeout` seconds). Raises `UpstreamFailure`
        (unreachable) on connection errors and timeouts; any HTTP status is returned. A 429/503 with a
        `Retry-After` header leaves its delay (seconds) in `retry_after_box()` for the router."""
        resp = await self._transport.post(url, headers, body)
        if resp.status in (429, 503):
            box = _retry_after.get()
            if box is not None:
                delay = parse_retry_after(resp.headers.get("retry-after"))
                if delay is not None:
                    box.append(delay)
        return resp

    async def aclose(self) -> None:
        await self._transport.aclose()


# The providers turn a non-200 answer into `UpstreamFailure` without its headers; the router hands each attempt
# a fresh list here and reads back the upstream's Retry-After. A mutable box (not a value) so that it also
# works when the attempt runs in a copied context (asyncio.wait_for on 3.10 runs it in a new task).
_retry_after: ContextVar[list[float] | None] = ContextVar("workjet_retry_after", default=None)


def retry_after_box() -> list[float]:
    """Start collecting the Retry-After of the attempts made from the current context; returns the box."""
    box: list[float] = []
    _retry_after.set(box)
    return box


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3); None when
    absent or unreadable. A date in the past is 0."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
