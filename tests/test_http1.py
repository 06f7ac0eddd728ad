"""The HTTP/1.1 transport (`providers/http1.py`) against scripted raw TCP servers.

Each test runs one asyncio loop holding both the client and a server whose per-connection behaviour is a
coroutine writing exact bytes, so framing, keep-alive, stale connections, timeouts and back-pressure are
exercised byte for byte, over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from workjet_fast.config import ConfigError, ProviderConfig, parse_settings
from workjet_fast.providers import http1
from workjet_fast.providers.errors import UpstreamFailure
from workjet_fast.providers.http import HttpClient, StreamBody

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    handler: Handler
    port: int = 0
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    eofs: int = 0
    _server: Any = None

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.eofs += 1
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def stop(self) -> None:
        self._server.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler, **client_options: Any) -> AsyncIterator[tuple[Server, HttpClient]]:
    """A started server running `handler` per connection, and a client; both closed on the way out."""
    srv = await Server(handler).start()
    client = _client(**client_options)
    try:
        yield srv, client
    finally:
        await client.aclose()
        await srv.stop()


def _client(**overrides: Any) -> HttpClient:
    options: dict[str, Any] = {"name": "p", "type": "openai", "base_url": "http://x", "timeout": 5.0}
    options.update(overrides)
    return HttpClient(ProviderConfig(**options))


def _response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


_LOOP = {"kind": "asyncio"}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Every test runs on asyncio's loop and on uvloop (what the gateway runs on): their transports differ."""
    _LOOP["kind"] = request.param
    return str(request.param)


def run(coro: Awaitable[None]) -> None:
    main = asyncio.wait_for(coro, 30)
    if _LOOP["kind"] == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


async def _keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
    while (body := await srv.read_request(reader)) is not None:
        writer.write(_response(b'{"echo": %d}' % len(body)))


def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request() -> None:
    async def main() -> None:
        async with serving(_keep_answering, headers={"x-extra": "1"}, max_connections=4) as (srv, client):
            for n in range(20):
                resp = await client.post(
                    srv.url, {"authorization": "Bearer k", "content-type": "application/json"}, b"x" * n
                )
                assert resp.status == 200
                assert resp.headers["content-type"] == "application/json"
                assert await resp.read() == b'{"echo": %d}' % n
            assert srv.connections == 1
            head = srv.requests[3].split(b"\r\n\r\n")[0].split(b"\r\n")
            assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
            assert f"host: 127.0.0.1:{srv.port}".encode() in head
            assert b"authorization: Bearer k" in head and b"content-length: 3" in head

    run(main())


def test_chunked_stream_arrives_piece_by_piece() -> None:
    async def main() -> None:
        step = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n")
            await writer.drain()
            await step.wait()  # the client must see the first piece before the rest exists
            writer.write(b"4\r\nabc\n\r\n0\r\n\r\n")
            await _keep_answering(reader, writer, srv)

        async with serving(handler) as (srv, client):
            resp = await client.post(srv.url, {}, b"{}")
            pieces = resp.chunks()
            assert await pieces.__anext__() == b"data: "
            step.set()
            rest = [p async for p in pieces]
            assert b"".join(rest) == b"abc\n"
            # The finished stream returned its connection: the next request reuses it.
            assert await (await client.post(srv.url, {}, b"12")).read() == b'{"echo": 2}'
            assert srv.connections == 1

    run(main())


def test_body_until_close_gzip_and_informational_responses() -> None:
    async def main() -> None:
        async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
            await writer.drain()
            writer.write(b" 1}")
            await writer.drain()
            writer.close()

        async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            while await srv.read_request(reader) is not None:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
                writer.write(_response(gzip.compress(b'{"zipped": true}'), b"content-encoding: gzip\r\n"))

        for handler, expected in ((until_close, b'{"a": 1}'), (gzipped, b'{"zipped": true}')):
            async with serving(handler) as (srv, client):
                resp = await client.post(srv.url, {}, b"{}")
                assert resp.status == 200 and "link" not in resp.headers
                assert await resp.read() == expected

    run(main())


def test_a_connection_the_upstream_dropped_while_idle_is_retried_once() -> None:
    async def main() -> None:
        async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            # Answers one request without `Connection: close`, then reads the next request and hangs up without
            # answering: the race where a keep-alive timeout fires as the next request leaves.
            await srv.read_request(reader)
            writer.write(_response(b"{}"))
            await writer.drain()
            await srv.read_request(reader)

        async with serving(one_then_close) as (srv, client):
            for _ in range(3):
                resp = await client.post(srv.url, {}, b"{}")
                assert await resp.read() == b"{}"
            assert srv.connections == 3  # each stale connection was replaced, and no request failed

    run(main())


def test_a_fresh_connection_closed_without_an_answer_is_a_failure_not_a_retry() -> None:
    async def main() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)

        async with serving(hang_up) as (srv, client):
            with pytest.raises(UpstreamFailure) as e:
                await client.post(srv.url, {}, b"{}")
            assert e.value.unreachable and "closed the connection" in e.value.message
            assert srv.connections == 1

    run(main())


def test_connection_close_is_honoured_and_the_pool_bound_holds() -> None:
    async def main() -> None:
        async def slow_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(_response(b"{}", b"connection: close\r\n"))
            await writer.drain()
            # The client must close its side even though we don't.
            assert await reader.read() == b""
            srv.eofs += 1

        async with serving(slow_close, max_connections=2) as (srv, client):
            results = await asyncio.gather(*(_post_read(client, srv.url) for _ in range(8)))
            assert results == [b"{}"] * 8
            assert srv.connections == 8 and srv.max_open <= 2

    run(main())


async def _post_read(client: HttpClient, url: str) -> bytes:
    return await (await client.post(url, {}, b"{}")).read()


def test_timeouts_and_refused_connections_are_unreachable_failures() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            await asyncio.sleep(10)

        async def stalls_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"half')
            await asyncio.sleep(10)

        async with serving(silent, timeout=0.2) as (srv, client):
            with pytest.raises(UpstreamFailure) as e:
                await client.post(srv.url, {}, b"{}")
            assert e.value.unreachable and "no response within 0.2s" in e.value.message

        async with serving(stalls_mid_body, read_timeout=0.2) as (srv, client):
            resp = await client.post(srv.url, {}, b"{}")
            with pytest.raises(UpstreamFailure) as e:
                await resp.read()
            assert e.value.unreachable and "sent nothing for 0.2s" in e.value.message

        dead = await Server(silent).start()
        url = dead.url
        await dead.stop()
        await asyncio.sleep(0.05)
        client = _client()
        with pytest.raises(UpstreamFailure) as e:
            await client.post(url, {}, b"{}")
        assert e.value.unreachable and e.value.message.startswith("cannot connect to 127.0.0.1:")
        await client.aclose()

    run(main())


def test_malformed_and_truncated_responses_fail_cleanly() -> None:
    async def main() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b"SMTP ready\r\n\r\n")
            await asyncio.sleep(1)

        async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\ndata:\r\n")
            await writer.drain()

        async def brotli(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(_response(b"??", b"content-encoding: br\r\n"))
            await asyncio.sleep(1)

        async with serving(garbage) as (srv, client):
            with pytest.raises(UpstreamFailure) as e:
                await client.post(srv.url, {}, b"{}")
            assert e.value.unreachable and "malformed HTTP" in e.value.message

        async with serving(truncated) as (srv, client):
            resp = await client.post(srv.url, {}, b"{}")
            with pytest.raises(UpstreamFailure) as e:
                _ = [p async for p in resp.chunks()]
            assert e.value.unreachable and "stream broke" in e.value.message

        async with serving(brotli) as (srv, client):
            with pytest.raises(UpstreamFailure) as e:
                await client.post(srv.url, {}, b"{}")
            assert e.value.status == 502 and "content-encoding 'br'" in e.value.message

    run(main())


def test_an_abandoned_stream_closes_its_connection() -> None:
    async def main() -> None:
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while True:
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(0.005)

        async with serving(endless) as (srv, client):
            for _ in range(3):
                resp = await client.post(srv.url, {}, b"{}")
                pieces = resp.chunks()
                assert (await pieces.__anext__()).startswith(b"hello")
                resp.close()
            await asyncio.sleep(0.1)
            assert srv.connections == 3 and srv.open_now == 0  # every abandoned stream's connection was closed

    run(main())


def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_everything() -> None:
    async def main() -> None:
        sent = 0

        async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            nonlocal sent
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            piece = b"x" * 65536
            for _ in range(256):  # 16 MiB
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        async with serving(firehose) as (srv, client):
            resp = await client.post(srv.url, {}, b"{}")
            pieces = resp.chunks()
            await pieces.__anext__()
            await asyncio.sleep(0.3)  # we don't read; the server can only fill socket buffers
            assert isinstance(resp, http1._Response)
            # At most the high-water mark plus what one socket read (256 KiB at most in asyncio) brought past it.
            assert resp._size <= http1._HIGH_WATER + 256 * 1024
            assert sent < 8 * 1024 * 1024
            total = sum([len(p) async for p in pieces])
            assert total > 15 * 1024 * 1024

    run(main())


def test_cancelled_waiters_do_not_leak_pool_slots() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            while await srv.read_request(reader) is not None:
                await release.wait()
                writer.write(_response(b"{}"))

        async with serving(held, max_connections=1) as (srv, client):
            first = asyncio.ensure_future(_post_read(client, srv.url))
            await asyncio.sleep(0.05)
            waiters = [asyncio.ensure_future(_post_read(client, srv.url)) for _ in range(5)]
            await asyncio.sleep(0.05)
            for w in waiters:
                w.cancel()
            release.set()
            assert await first == b"{}"
            assert await _post_read(client, srv.url) == b"{}"
            assert srv.connections == 1

    run(main())


def test_a_body_read_whole_is_never_paused() -> None:
    async def main() -> None:
        big = b"y" * (3 * 1024 * 1024)

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            await srv.read_request(reader)
            writer.write(_response(big))
            await writer.drain()

        async with serving(handler, read_timeout=2) as (srv, client):
            resp: StreamBody = await client.post(srv.url, {}, b"{}")
            assert await resp.read() == big

    run(main())


def test_https_verifies_the_upstream_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Over TLS the client checks the certificate chain and the host name against the system's trust store
    (`SSL_CERT_FILE` points OpenSSL at a test CA here): a certificate from an unknown CA, or for another
    name, is refused as unreachable, never used."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    good = ca.issue_cert("127.0.0.1")
    wrong_name = ca.issue_cert("upstream.example")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def main() -> None:
        async def start(cert: Any) -> asyncio.Server:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ctx)

            async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                srv = Server(_keep_answering)
                try:
                    await _keep_answering(reader, writer, srv)
                except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                    pass
                finally:
                    writer.close()

            return await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=ctx)

        for cert, trusted, ok in ((good, True, True), (good, False, False), (wrong_name, True, False)):
            if trusted:
                monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
            else:
                monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            server = await start(cert)
            url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
            client = _client()
            try:
                if ok:
                    for n in range(3):
                        assert await (await client.post(url, {}, b"x" * n)).read() == b'{"echo": %d}' % n
                else:
                    with pytest.raises(UpstreamFailure) as e:
                        await client.post(url, {}, b"{}")
                    assert e.value.unreachable and "CERTIFICATE_VERIFY_FAILED" in e.value.message
            finally:
                await client.aclose()
                server.close()

    run(main())


@pytest.mark.parametrize("http_client", ["native", "aiohttp"])
def test_both_http1_clients_serve_json_and_streams(http_client: str) -> None:
    """`http_client: aiohttp` stays a working alternative behind the same interface."""

    async def main() -> None:
        async def mixed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
            while (body := await srv.read_request(reader)) is not None:
                if body == b"stream":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    writer.write(b"6\r\ndata: \r\n4\r\nabc\n\r\n0\r\n\r\n")
                else:
                    writer.write(_response(b'{"ok": true}', b"retry-after: 3\r\n"))

        async with serving(mixed, http_client=http_client, max_connections=2) as (srv, client):
            for _ in range(3):
                resp = await client.post(srv.url, {"content-type": "application/json"}, b"{}")
                assert resp.status == 200 and resp.headers.get("retry-after") == "3"
                assert await resp.read() == b'{"ok": true}'
                stream = await client.post(srv.url, {}, b"stream")
                assert b"".join([p async for p in stream.chunks()]) == b"data: abc\n"
                stream.close()
            assert srv.connections <= 2

    run(main())


def test_http_client_option_is_checked() -> None:
    base = "providers:\n  p: {type: openai, base_url: 'http://x/v1', http_client: %s}\nmodels:\n  m: {provider: p}\n"
    assert parse_settings(base % "aiohttp").providers["p"].http_client == "aiohttp"
    assert parse_settings(base % "native").providers["p"].http_client == "native"
    with pytest.raises(ConfigError, match="http_client"):
        parse_settings(base % "curl")
