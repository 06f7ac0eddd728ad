"""The HTTP/2 transport (`http2: prior_knowledge` / `http2: true`) against a real HTTP/2 server.

The upstream is a tiny ASGI fake served by hypercorn, which speaks h2c when the client starts with the HTTP/2
preface; it records `scope["http_version"]` for every request, so the tests see what went over the wire.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.conftest import GatewayFactory, wait_for
from tests.fakes.openai_upstream import free_port
from workjet_fast.config import ConfigError, ProviderConfig, parse_settings
from workjet_fast.providers.http import HttpClient, StreamBody, parse_retry_after, retry_after_box
from workjet_fast.providers.http2 import _Http2Body

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


@dataclass
class H2Upstream:
    """OpenAI-shaped fake over hypercorn. Models: anything (a normal answer), `slow` (streams 4 KB frames until
    the client goes away), `fail-<status>` (that status, with `Retry-After: 7` on 429/503)."""

    port: int = 0
    versions: list[str] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)
    disconnects: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> H2Upstream:
        self.port = self.port or free_port()
        ready = threading.Event()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.graceful_timeout = 0.5
        config.accesslog = None

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._stop = asyncio.Event()
                loop.call_soon(ready.set)
                await serve(self._app, config, shutdown_trigger=self._stop.wait, mode="asgi")  # type: ignore[arg-type]

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        assert wait_for(self._listening), "hypercorn did not start"
        return self

    def _listening(self) -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.versions.append(scope["http_version"])
        if scope.get("client"):
            self.client_ports.add(scope["client"][1])
        req = orjson.loads(body)
        model = str(req.get("model"))
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            headers = [(b"content-type", b"application/json")]
            if status in (429, 503):
                headers.append((b"retry-after", b"7"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            err = {"error": {"message": f"h2 fake says {status}", "type": "fake"}}
            await send({"type": "http.response.body", "body": orjson.dumps(err)})
            return
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model}
        if not req.get("stream"):
            message = {"role": "assistant", "content": f"over HTTP/{scope['http_version']}"}
            answer: dict[str, Any] = {
                **chunk,
                "object": "chat.completion",
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
            answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
            answer["usage"]["total_tokens"] = 2
            start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            await send(start)
            await send({"type": "http.response.body", "body": orjson.dumps(answer)})
            return
        sse = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": sse})

        def frame(text: str, finish: str | None = None) -> bytes:
            c = {**chunk, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(c) + b"\n\n"

        if model != "slow":
            data = frame(f"over HTTP/{scope['http_version']}") + frame("", "stop") + b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": data})
            return
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            while not gone.is_set():
                sent = asyncio.ensure_future(
                    send({"type": "http.response.body", "body": frame("x" * 4000), "more_body": True})
                )
                await asyncio.wait([sent, watcher], return_when=asyncio.FIRST_COMPLETED)
                if not sent.done():
                    sent.cancel()
                    await asyncio.gather(sent, return_exceptions=True)
                await asyncio.sleep(0.005)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.disconnects += 1


@pytest.fixture(scope="module")
def h2_upstream() -> Iterator[H2Upstream]:
    fake = H2Upstream().start()
    yield fake
    fake.stop()


def _config(url: str, http2: str, **kw: Any) -> ProviderConfig:
    return ProviderConfig(
        name="h2",
        type="openai",
        base_url=url,
        http2=http2 in ("true", "prior_knowledge"),
        http2_prior_knowledge=http2 == "prior_knowledge",
        timeout=5,
        **kw,
    )


async def _post(client: HttpClient, url: str, model: str, stream: bool = False) -> StreamBody:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    return await client.post(url + "/chat/completions", {"content-type": "application/json"}, body)


def test_prior_knowledge_speaks_h2c(h2_upstream: H2Upstream) -> None:
    async def go() -> tuple[int, bytes, str]:
        client = HttpClient(_config(h2_upstream.base_url, "prior_knowledge"))
        try:
            resp = await _post(client, h2_upstream.base_url, "m")
            assert isinstance(resp, _Http2Body)
            return resp.status, await resp.read(), resp.http_version
        finally:
            await client.aclose()

    before = len(h2_upstream.versions)
    status, data, version = asyncio.run(go())
    assert status == 200 and orjson.loads(data)["choices"][0]["message"]["content"] == "over HTTP/2"
    assert version == "HTTP/2"
    assert h2_upstream.versions[before:] == ["2"]


def test_http2_true_over_plain_http_stays_on_http11(h2_upstream: H2Upstream) -> None:
    """`http2: true` negotiates by ALPN, which only exists over TLS: a plain http upstream gets HTTP/1.1."""

    async def go() -> bytes:
        client = HttpClient(_config(h2_upstream.base_url, "true"))
        try:
            return await (await _post(client, h2_upstream.base_url, "m")).read()
        finally:
            await client.aclose()

    before = len(h2_upstream.versions)
    assert b"over HTTP/1.1" in asyncio.run(go())
    assert h2_upstream.versions[before:] == ["1.1"]


def test_streams_share_one_connection(h2_upstream: H2Upstream) -> None:
    async def go() -> list[bytes]:
        client = HttpClient(_config(h2_upstream.base_url, "prior_knowledge", max_connections=4))
        try:

            async def one() -> bytes:
                resp: StreamBody = await _post(client, h2_upstream.base_url, "m", stream=True)
                return b"".join([c async for c in resp.chunks()])

            return await asyncio.gather(*(one() for _ in range(20)))
        finally:
            await client.aclose()

    ports_before = set(h2_upstream.client_ports)
    bodies = asyncio.run(go())
    assert all(b.endswith(b"data: [DONE]\n\n") and b"over HTTP/2" in b for b in bodies)
    assert len(h2_upstream.client_ports - ports_before) == 1  # 20 streams, one TCP connection


def test_closing_streams_early_resets_them_and_the_connection_stays_usable(h2_upstream: H2Upstream) -> None:
    """150 abandoned streams on one connection: without RST_STREAM (encode/httpcore#943) the upstream would keep
    every one of them open and the connection would refuse new streams after 100."""
    n = 150

    async def go() -> bytes:
        client = HttpClient(_config(h2_upstream.base_url, "prior_knowledge", max_connections=1))
        try:
            for _ in range(n):
                resp: StreamBody = await _post(client, h2_upstream.base_url, "slow", stream=True)
                assert resp.status == 200
                it = resp.chunks()
                assert isinstance(it, AsyncGenerator)
                assert (await it.__anext__()).startswith(b"data: ")
                resp.close()
                await it.aclose()
            return await (await _post(client, h2_upstream.base_url, "m")).read()
        finally:
            await client.aclose()

    before = h2_upstream.disconnects
    assert b"over HTTP/2" in asyncio.run(go())
    assert wait_for(lambda: h2_upstream.disconnects - before == n), f"{h2_upstream.disconnects - before} of {n}"


def test_retry_after_reaches_the_box(h2_upstream: H2Upstream) -> None:
    async def go() -> tuple[int, list[float]]:
        client = HttpClient(_config(h2_upstream.base_url, "prior_knowledge"))
        try:
            box = retry_after_box()
            resp = await _post(client, h2_upstream.base_url, "fail-429")
            await resp.read()
            return resp.status, box
        finally:
            await client.aclose()

    assert asyncio.run(go()) == (429, [7.0])


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("soon") is None
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now=now) == 3.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now=now) == 0.0


def test_gateway_end_to_end_over_h2c(gateway_factory: GatewayFactory, h2_upstream: H2Upstream, tmp_path: Any) -> None:
    sections = f"""
providers:
  h2:
    type: openai
    base_url: {h2_upstream.base_url}
    api_key: sk-h2-secret
    http2: prior_knowledge
models:
  m: {{provider: h2, model: m}}
"""
    gw = gateway_factory(sections=sections, name="gw-h2")
    key = gw.create_key("h2")
    before = len(h2_upstream.versions)
    with openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0) as sdk:
        done = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content == "over HTTP/2"
        stream = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "over HTTP/2"
    assert h2_upstream.versions[before:] == ["2", "2"]


@pytest.mark.parametrize(
    ("value", "http2", "prior"), [("false", False, False), ("true", True, False), ("prior_knowledge", True, True)]
)
def test_http2_option(value: str, http2: bool, prior: bool) -> None:
    text = (
        f"providers:\n  p: {{type: openai, base_url: 'http://h/v1', http2: {value}}}\nmodels:\n  m: {{provider: p}}\n"
    )
    p = parse_settings(text).providers["p"]
    assert (p.http2, p.http2_prior_knowledge) == (http2, prior)


def test_http2_option_rejects_other_values() -> None:
    text = "providers:\n  p: {type: openai, base_url: 'http://h/v1', http2: h2c}\nmodels:\n  m: {provider: p}\n"
    with pytest.raises(ConfigError, match="providers.p.http2: must be true, false or prior_knowledge, got 'h2c'"):
        parse_settings(text)
