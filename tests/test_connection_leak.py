"""The real gateway against the fake upstream, counting the upstream's open TCP connections from /proc/net/tcp:
clients that disconnect mid-stream leave no upstream connection behind, and the pool never holds more than
`max_connections` connections to a provider, however many requests wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory, GatewayProc, wait_for
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts sockets through /proc/net/tcp (Linux)"),
]

MSG = [{"role": "user", "content": "tick tock"}]
POOL = 3


def open_connections(port: int) -> int:
    """TCP connections to `port` that are ESTABLISHED at both ends (loopback lists both sides).

    The gateway's side is what the pool controls: it leaves ESTABLISHED in the close() call itself, while the
    upstream's side only does when the kernel has processed the FIN, which on a loaded machine can lag behind
    the pool opening the next connection."""
    ends: dict[tuple[int, int], str] = {}  # (local port, remote port) -> state
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        ends[(local, remote)] = fields[3]
    return sum(
        1
        for (local, remote), state in ends.items()
        if local == port and state == "01" and ends.get((remote, local)) == "01"
    )


def _gateway(gateway_factory: GatewayFactory, fake: FakeOpenAI, tmp_path: Path) -> tuple[GatewayProc, str]:
    sections = f"""
providers:
  fake:
    type: openai
    base_url: {fake.base_url}
    api_key: sk-upstream-secret
    max_connections: {POOL}
    timeout: 60
    read_timeout: 30
models:
  ok: {{provider: fake, model: upstream-ok}}
  slow: {{provider: fake, model: slow}}
"""
    gw = gateway_factory(sections=sections, name="gw-pool")
    key = gw.create_key("pool")
    # One request first, so the key is in the gateway's cache before the concurrent requests: this file is about
    # upstream connections, not about first-use look-ups of a fresh key (auth.py rate-limits those).
    assert httpx.get(gw.v1 + "/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
    return gw, key


async def _hold_streams(
    gw: GatewayProc, key: str, n: int, fake: FakeOpenAI, on_started: Callable[[int], None] | None = None
) -> int:
    """Open `n` streams to the slow model, each on its own client connection; each is dropped after its first
    piece once `release` says so. Returns the most upstream connections seen open at once."""
    started: list[int] = []
    release = [asyncio.Event() for _ in range(n)]
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, open_connections(fake.port))
            await asyncio.sleep(0.005)

    async def one(i: int) -> None:
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=60) as c:
            body = {"model": "slow", "messages": MSG, "stream": True}
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for piece in r.aiter_raw():
                    assert piece.startswith(b"data: ")
                    break
                started.append(i)
                await release[i].wait()
        # leaving the blocks drops the client connection with the stream unfinished

    sampler = asyncio.ensure_future(sample())
    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    try:
        while len(started) < n:
            before = len(started)
            while len(started) == before:
                await asyncio.sleep(0.01)
                if any(t.done() and t.exception() for t in tasks):
                    raise next(t.exception() for t in tasks if t.done() and t.exception())  # type: ignore[misc]
            if on_started is not None:
                on_started(len(started))
            # Read here too, not only by the sampler: the streams just started hold their upstream connections
            # until released, while on a fast machine the whole hold can fall between two samples.
            peak = max(peak, open_connections(fake.port))
            for i in list(started):
                release[i].set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for e in release:
            e.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sampler
    return peak


def test_disconnects_mid_stream_leave_no_upstream_connection(
    gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    gw, key = _gateway(gateway_factory, fake_upstream, tmp_path)
    peak = asyncio.run(_hold_streams(gw, key, POOL, fake_upstream))
    assert 1 <= peak <= POOL
    assert wait_for(lambda: fake_upstream.disconnects == POOL), f"disconnects: {fake_upstream.disconnects}"
    # an abandoned body never goes back to the pool: every one of those connections is closed
    assert wait_for(lambda: open_connections(fake_upstream.port) == 0), open_connections(fake_upstream.port)

    # and the gateway still serves, on a kept-alive connection it reuses
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        for _ in range(3):
            r = c.post("/v1/chat/completions", json={"model": "ok", "messages": MSG})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "You said: tick tock"
    assert open_connections(fake_upstream.port) == 1
    assert fake_upstream.completed_streams == 0


def test_pool_never_exceeds_max_connections(
    gateway_factory: GatewayFactory, fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    gw, key = _gateway(gateway_factory, fake_upstream, tmp_path)
    waves: list[tuple[int, int]] = []  # (streams started so far, requests the upstream had seen then)
    n = 2 * POOL + 1
    peak = asyncio.run(
        _hold_streams(gw, key, n, fake_upstream, on_started=lambda k: waves.append((k, len(fake_upstream.requests))))
    )
    assert peak <= POOL, f"{peak} upstream connections open at once with max_connections={POOL}"
    assert peak >= 1
    assert waves[-1][0] == n and len(fake_upstream.requests) == n  # every waiting request was served in the end
    assert wait_for(lambda: fake_upstream.disconnects == n)
    assert wait_for(lambda: open_connections(fake_upstream.port) == 0)


def test_http2_disconnects_reset_streams_and_keep_one_connection(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """The same over `http2: prior_knowledge`: every abandoned stream is reset (the upstream sees each client go
    away), all of them share one connection, and that connection stays open and usable afterwards."""
    from tests.test_http2 import H2Upstream

    up = H2Upstream().start()
    try:
        sections = f"""
providers:
  h2:
    type: openai
    base_url: {up.base_url}
    api_key: sk-h2-secret
    http2: prior_knowledge
    max_connections: {POOL}
    timeout: 60
models:
  ok: {{provider: h2, model: ok}}
  slow: {{provider: h2, model: slow}}
"""
        gw = gateway_factory(sections=sections, name="gw-h2-pool")
        key = gw.create_key("h2")
        headers = {"authorization": f"Bearer {key}"}
        assert httpx.get(gw.v1 + "/models", headers=headers).status_code == 200
        n = 12

        async def drop_streams() -> None:
            async def one() -> None:
                async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=60) as c:
                    body = {"model": "slow", "messages": MSG, "stream": True}
                    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                        assert r.status_code == 200
                        async for piece in r.aiter_raw():
                            assert piece.startswith(b"data: ")
                            break

            await asyncio.gather(*(one() for _ in range(n)))

        asyncio.run(drop_streams())
        assert wait_for(lambda: up.disconnects == n), f"the upstream saw {up.disconnects} of {n} streams go away"
        assert up.versions == ["2"] * n
        with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as c:
            r = c.post("/v1/chat/completions", json={"model": "ok", "messages": MSG})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "over HTTP/2"
        assert 1 <= len(up.client_ports) <= POOL
        assert 1 <= open_connections(up.port) <= POOL  # kept alive for the next streams, within the pool
    finally:
        up.stop()
