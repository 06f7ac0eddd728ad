"""HTTP/1.1 to upstreams on asyncio's protocol layer, parsed by httptools (llhttp): the default transport.

Why not a general-purpose client: measured in `benches/load` (RESULTS.md, "Upstream client"), aiohttp's
client was 30% of the gateway's CPU under load, for what is here a narrow job: POST a small JSON body to
one origin per provider over keep-alive connections, then read a JSON body or relay a stream. This module
does only that, with one `asyncio.Protocol` per connection and no per-request objects beyond the response.

- **Pool**: per origin, at most `max_connections` open; idle connections are reused most recent first, and
  dropped after `_KEEPALIVE` seconds idle or as soon as the upstream closes them. A request waits for a free
  connection within its `timeout`.
- **Stale connections**: a reused connection that the upstream closed before answering a single byte (it
  timed out its idle keep-alive while our request was in flight) is retried once on a fresh connection.
- **Framing**: Content-Length, chunked, or until close; `Connection: close` and HTTP/1.0 are honoured.
  `gzip`/`deflate` bodies are decoded although we never ask for them (no `Accept-Encoding` is sent).
- **Timeouts**: `connect_timeout` to connect (TLS included), `timeout` until the response headers, and
  `read_timeout` for the longest silence while a body is being read; the last two are coarse (`deadlines.py`:
  they fire up to 20 ms late, for a tenth of an event-loop timer's cost).
- **Back-pressure**: reading from the upstream pauses while more than `_HIGH_WATER` bytes wait for the client.
- **Abandoning**: `close()` on an unfinished body closes the connection; only a complete response returns
  it to the pool.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from workjet_fast.config import ProviderConfig
from workjet_fast.deadlines import deadlines, within
from workjet_fast.providers.errors import UpstreamFailure
from workjet_fast.providers.http import StreamBody

__all__ = ["Http1Transport"]

_KEEPALIVE = 15.0  # seconds an idle connection is kept; below common server defaults (nginx 75, Node 5->...)
_HIGH_WATER = 256 * 1024  # buffered body bytes at which reading from the upstream pauses


class _Stale(Exception):
    """A reused connection closed before any byte of the response arrived."""


class _Response(StreamBody):
    """One response on one connection. The protocol feeds it; `read()` and `chunks()` drain it."""

    __slots__ = (
        "status",
        "headers",
        "_conn",
        "_buf",
        "_size",
        "_complete",
        "_error",
        "_waiter",
        "_head",
        "_decoder",
        "_done_with",
        "_raw_headers",
        "_until_eof",
        "_keep_alive",
        "_streaming",
    )

    def __init__(self, conn: _Conn, head: asyncio.Future[None]) -> None:
        self.status = 0
        self.headers: Mapping[str, str] = {}
        self._conn = conn
        self._buf: list[bytes] = []
        self._size = 0
        self._complete = False
        self._error: UpstreamFailure | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head = head
        self._decoder: Any = None
        self._done_with = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._until_eof = False
        self._keep_alive = False
        self._streaming = False  # back-pressure applies only to a body relayed piece by piece

    # -- fed by the protocol -------------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as e:
                self._fail(UpstreamFailure(f"the upstream sent a body that does not decode: {e}", unreachable=True))
                return
            if not data:
                return
        self._buf.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._streaming:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._buf.append(tail)
                self._size += len(tail)
        self._complete = True
        self._wake()

    def _fail(self, error: UpstreamFailure) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        loop = self._conn.loop
        self._waiter = w = loop.create_future()
        timers = deadlines(loop)
        timer = timers.add(self._conn.pool.read_timeout, self._timed_out)
        try:
            await w
        finally:
            timers.cancel(timer)
            self._waiter = None

    def _timed_out(self) -> None:
        secs = self._conn.pool.read_timeout
        self._fail(UpstreamFailure(f"the upstream sent nothing for {secs:g}s", unreachable=True))
        self._conn.abort()

    # -- StreamBody --------------------------------------------------------------------------------------------------

    async def read(self) -> bytes:
        try:
            while not self._complete:
                if self._error is not None:
                    raise self._error
                await self._wait()
            data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
            self._buf.clear()
            return data
        except UpstreamFailure as e:
            raise UpstreamFailure(f"reading the response failed: {e.message}", unreachable=True) from None
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        self._streaming = True
        while True:
            if self._buf:
                data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
                self._buf.clear()
                self._size = 0
                if conn.paused:
                    conn.resume()
                yield data
            elif self._complete:
                self.close()
                return
            elif self._error is not None:
                self.close()
                raise UpstreamFailure(f"the upstream stream broke: {self._error.message}", unreachable=True)
            else:
                await self._wait()

    def close(self) -> None:
        if self._done_with:
            return
        self._done_with = True
        conn = self._conn
        if self._complete and self._error is None and self._keep_alive:
            conn.pool.release(conn)
        else:
            self._buf.clear()
            self._fail(UpstreamFailure("the response was abandoned and its connection closed", unreachable=True))
            conn.abort()


class _Conn(asyncio.Protocol):
    """One upstream connection: writes requests, parses responses into the current `_Response`."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: _Response | None = None
        self.closed = False
        self.paused = False
        self.got_bytes = False
        self.idle_since = 0.0
        self.informational = False

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # bytes nobody asked for: the connection can't be trusted with the next request
            self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            r._fail(UpstreamFailure(f"the upstream sent malformed HTTP: {e}", unreachable=True))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r = self.response
        if r is not None and not r._complete:
            if r._head.done() and r._until_eof and r._error is None:
                r._finish()  # the body was delimited by the connection's end
            elif not self.got_bytes and not r._head.done():
                r._head.set_exception(_Stale())
            else:
                why = f": {exc}" if exc else ""
                r._fail(UpstreamFailure(f"the upstream closed the connection{why}", unreachable=True))
        self.pool.forget(self)

    # -- httptools callbacks ----------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.response
        if r is not None:
            r._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        r = self.response
        if r is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue / 103 Early Hints: the real answer follows
            self.informational = True
            r._raw_headers.clear()
            return
        headers: dict[str, str] = {}
        for name, value in r._raw_headers:
            k = name.decode("latin-1").lower()
            v = value.decode("latin-1")
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        r._raw_headers.clear()
        r.status = status
        r.headers = headers
        r._keep_alive = self.parser.should_keep_alive()
        r._until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        if r._until_eof:
            r._keep_alive = False
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            r._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            r._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            r._fail(UpstreamFailure(f"the upstream sent an unsupported content-encoding {encoding!r}", status=502))
            self.abort()
            return
        if not r._head.done():
            r._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        r = self.response
        if r is not None and not self.informational:
            r._feed(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        r = self.response
        if r is not None:
            r._finish()

    # -- used by the pool and the response ---------------------------------------------------------------------------

    def send(self, data: bytes) -> _Response:
        head: asyncio.Future[None] = self.loop.create_future()
        self.response = r = _Response(self, head)
        self.got_bytes = False
        assert self.transport is not None
        self.transport.write(data)
        return r

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()


class _Pool:
    """Keep-alive connections to one origin, at most `max_connections` open."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, config: ProviderConfig, host: str, port: int, tls: bool
    ) -> None:
        self.loop = loop
        self.host, self.port = host, port
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        self.max = config.max_connections
        self.connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self.idle: deque[_Conn] = deque()
        self.open = 0  # connecting, busy and idle
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def acquire(self) -> tuple[_Conn, bool]:
        """A connection and whether it was reused."""
        while True:
            now = self.loop.time()
            while self.idle:
                conn = self.idle.pop()
                if conn.usable and now - conn.idle_since < _KEEPALIVE:
                    return conn, True
                conn.abort()
            if self.open < self.max:
                self.open += 1
                try:
                    return await self._connect(), False
                except BaseException:
                    self.open -= 1
                    self._wake()
                    raise
            fut: asyncio.Future[None] = self.loop.create_future()
            self.waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # we were woken as we were cancelled: pass it on
                raise
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass

    async def _connect(self) -> _Conn:
        conn = _Conn(self)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamFailure(
                f"cannot connect to {self.host}:{self.port}: no connection within {self.connect_timeout:g}s",
                unreachable=True,
            ) from None
        except (OSError, ssl.SSLError) as e:
            raise UpstreamFailure(
                f"cannot connect to {self.host}:{self.port}: {_describe(e)}", unreachable=True
            ) from None
        return conn

    def release(self, conn: _Conn) -> None:
        conn.response = None
        if self.closed or not conn.usable:
            conn.abort()
            return
        conn.resume()
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self._wake()

    def forget(self, conn: _Conn) -> None:
        """`conn` closed (either side): its slot is free."""
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.pop().abort()


class Http1Transport:
    """`post(url, headers, body)`: the HTTP/1.1 transport of `HttpClient`."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._pools: dict[tuple[str, int, bool], _Pool] = {}
        self._heads: dict[str, tuple[Mapping[str, str], tuple[str, int, bool], bytes]] = {}

    def _head(self, url: str, headers: Mapping[str, str]) -> tuple[tuple[str, int, bool], bytes]:
        """The origin and the request head up to `content-length:`; cached per URL and headers object."""
        cached = self._heads.get(url)
        if cached is not None and cached[0] is headers:
            return cached[1], cached[2]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamFailure(f"cannot call {url!r}: only http:// and https:// URLs are supported", status=502)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            host = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        lines = [f"POST {target} HTTP/1.1", f"host: {host}"]
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                continue
            if any(c in name or c in value for c in "\r\n\0"):
                raise UpstreamFailure(f"the header {name!r} holds a line break", status=502)
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        origin = (parts.hostname, port, tls)
        self._heads[url] = (headers, origin, head)
        return origin, head

    def _pool(self, origin: tuple[str, int, bool]) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(asyncio.get_running_loop(), self.config, *origin)
        return pool

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody:
        origin, head = self._head(url, headers)
        pool = self._pool(origin)
        request = head + str(len(body)).encode() + b"\r\n\r\n" + body
        try:
            return await within(self.config.timeout, self._exchange(pool, request))
        except TimeoutError:
            raise UpstreamFailure(f"no response within {self.config.timeout:g}s", unreachable=True) from None

    async def _exchange(self, pool: _Pool, request: bytes) -> StreamBody:
        for attempt in (1, 2):
            conn, reused = await pool.acquire()
            try:
                r = conn.send(request)
                await r._head
                return r
            except _Stale:
                if reused and attempt == 1:
                    continue
                raise UpstreamFailure(
                    f"{pool.host}:{pool.port} closed the connection without answering", unreachable=True
                ) from None
            except BaseException:
                conn.abort()  # cancelled or timed out mid-request: the connection is in an unknown state
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _describe(e: BaseException) -> str:
    return (str(e) or type(e).__name__)[:300]
