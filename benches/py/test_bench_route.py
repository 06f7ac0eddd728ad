"""Routing overhead and fallback latency, each against a direct call measured in the same run.

- `resolve+order`: the CPU cost the router adds before any I/O, for a model with three deployments.
- `in-process complete`: `OPS` requests through `Router.complete` vs straight to a provider that does no I/O:
  the router's own per-request cost, free of network noise (divide the figures by `OPS`).
- `complete`: one non-streaming request through `Router.complete` vs `Provider.complete` on the same loopback
  upstream; the difference is the router's whole per-request cost (ordering, cap, breaker, attempt record).
- `fallback to first byte`: open a stream and read its first piece, directly on the healthy deployment vs through
  the router when the first deployment refuses the connection, and when its circuit is open (skipped, no I/O).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.fakes.openai_upstream import free_port
from tests.fakes.scripted_upstream import ScriptedUpstream
from workjet_fast.config import Settings, parse_settings
from workjet_fast.context import RequestContext
from workjet_fast.pipeline.route import Router
from workjet_fast.providers import Provider, make_provider
from workjet_fast.providers.http import HttpClient

OPS = 1000
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream([200]) as up:
        yield up


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _settings(upstream: str, breaker_failures: int = 10**9) -> Settings:
    return parse_settings(
        f"""
providers:
  up: {{type: openai, base_url: "{upstream}"}}
  dead: {{type: openai, base_url: "http://127.0.0.1:{free_port()}/v1", connect_timeout: 1}}
models:
  direct: {{provider: up, model: m}}
  fallback:
    deployments: [{{provider: dead, model: gone}}, {{provider: up, model: m, priority: 1}}]
  spread:
    deployments:
      - {{provider: up, model: a, weight: 2}}
      - {{provider: up, model: b}}
      - {{provider: up, model: c, priority: 1}}
routing:
  breaker_failures: {breaker_failures}
"""
    )


def _router(settings: Settings) -> Router:
    return Router(settings, {name: make_provider(p) for name, p in settings.providers.items()})


def _bench(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[Any]]) -> None:
    loop.run_until_complete(fn())  # warm the connection pool
    result = benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: loop.run_until_complete(fn()), rounds=200, warmup_rounds=5
    )
    assert result is not None


def _close(loop: asyncio.AbstractEventLoop, providers: dict[str, Provider]) -> None:
    for p in providers.values():
        loop.run_until_complete(p.aclose())


def test_resolve_and_order(benchmark: BenchmarkFixture) -> None:
    router = _router(_settings("http://127.0.0.1:9/v1"))

    def pick() -> str:
        return router.order(router.resolve("spread"))[0].label

    assert benchmark(pick) in ("up/a", "up/b")


class _InProcess(Provider):
    """No I/O: isolates what the router itself costs per request."""

    ANSWER: dict[str, Any] = {"object": "chat.completion", "choices": []}

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.ANSWER

    async def stream(self, model: str, body: dict[str, Any]) -> Any:
        raise NotImplementedError


def _batch(call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        for _ in range(OPS):
            await call()
        return OPS

    return run


def test_in_process_complete_direct(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    settings = _settings("http://127.0.0.1:9/v1")
    provider = _InProcess(settings.providers["up"], HttpClient(settings.providers["up"]))
    _bench(benchmark, loop, _batch(lambda: provider.complete("m", dict(BODY))))
    benchmark.extra_info["requests_per_round"] = OPS


def test_in_process_complete_through_router(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    settings = _settings("http://127.0.0.1:9/v1")
    provider = _InProcess(settings.providers["up"], HttpClient(settings.providers["up"]))
    router = Router(settings, {"up": provider, "dead": provider})
    route = router.resolve("spread")
    _bench(benchmark, loop, _batch(lambda: router.complete(route, BODY, RequestContext("b"))))
    benchmark.extra_info["requests_per_round"] = OPS


def test_complete_direct(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, upstream: ScriptedUpstream
) -> None:
    provider = make_provider(_settings(upstream.base_url).providers["up"])
    _bench(benchmark, loop, lambda: provider.complete("m", dict(BODY)))
    _close(loop, {"up": provider})


def test_complete_through_router(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, upstream: ScriptedUpstream
) -> None:
    router = _router(_settings(upstream.base_url))
    route = router.resolve("direct")
    _bench(benchmark, loop, lambda: router.complete(route, BODY, RequestContext("b")))
    _close(loop, router.providers)


async def _first_piece(open_stream: Awaitable[Any]) -> bytes:
    stream = await open_stream
    try:
        async for piece in stream:
            return bytes(piece)
        return b""
    finally:
        await stream.aclose()


def test_first_byte_direct(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, upstream: ScriptedUpstream
) -> None:
    provider = make_provider(_settings(upstream.base_url).providers["up"])
    _bench(benchmark, loop, lambda: _first_piece(provider.stream("m", {**BODY, "stream": True})))
    _close(loop, {"up": provider})


def test_first_byte_after_refused_connection(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, upstream: ScriptedUpstream
) -> None:
    router = _router(_settings(upstream.base_url))
    route = router.resolve("fallback")
    body = {**BODY, "stream": True}
    _bench(benchmark, loop, lambda: _first_piece(router.stream(route, body, RequestContext("b"))))
    assert router.health()["deployments"]["dead/gone"]["state"] == "closed"  # every round really tried it
    _close(loop, router.providers)


def test_first_byte_past_an_open_circuit(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, upstream: ScriptedUpstream
) -> None:
    router = _router(_settings(upstream.base_url, breaker_failures=1))
    route = router.resolve("fallback")
    body = {**BODY, "stream": True}
    _bench(benchmark, loop, lambda: _first_piece(router.stream(route, body, RequestContext("b"))))
    assert router.health()["deployments"]["dead/gone"]["state"] == "open"
    _close(loop, router.providers)
