"""The router over real HTTP: ordering, caps, fallback, retries, the total timeout, circuit breakers, health.

Upstreams are the fake OpenAI API (behaviour by model name: `fail-500`, `stall`, `break`, ...), the fake
Anthropic API, and a loopback port where nothing listens (connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, free_port
from tests.fakes.scripted_upstream import ScriptedUpstream
from workjet_fast.config import ConfigError, Settings, parse_settings
from workjet_fast.context import RequestContext
from workjet_fast.errors import BadRequest, ProviderError, ProviderUnavailable
from workjet_fast.pipeline import route as route_module
from workjet_fast.pipeline.breaker import BreakerBoard
from workjet_fast.pipeline.route import Router
from workjet_fast.providers import UpstreamFailure, make_provider
from workjet_fast.providers.http import StreamBody

T = TypeVar("T")
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def _settings(upstream: str, models: str, routing: str = "", tiers: str = "") -> Settings:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    text = f"""
providers:
  up: {{type: openai, base_url: "{upstream}", api_key: sk-up-secret, timeout: 5}}
  dead: {{type: openai, base_url: "{dead}", api_key: sk-dead-secret, connect_timeout: 1, timeout: 1}}
models:
{textwrap.indent(textwrap.dedent(models).strip(), "  ")}
"""
    if tiers:
        text += "tiers:\n" + textwrap.indent(textwrap.dedent(tiers).strip(), "  ") + "\n"
    text += "routing:\n  retry_backoff: 0.001\n" + textwrap.indent(textwrap.dedent(routing).strip(), "  ") + "\n"
    return parse_settings(text)


def _router(settings: Settings) -> Router:
    return Router(settings, {name: make_provider(p) for name, p in settings.providers.items()})


def _run(router: Router, fn: Callable[[Router], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            return await fn(router)
        finally:
            for p in router.providers.values():
                await p.aclose()

    return asyncio.run(go())


def _complete(router: Router, model: str, ctx: RequestContext, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return _run(router, lambda r: r.complete(r.resolve(model), body or HELLO, ctx))


# ---- catalog ---------------------------------------------------------------------------------------------------


def test_unknown_model_is_a_bad_request(upstream: FakeOpenAI) -> None:
    router = _router(_settings(upstream.base_url, "m: {provider: up}"))
    with pytest.raises(BadRequest, match="Unknown model or tier"):
        router.resolve("nope")


def test_priority_first_then_weighted_among_equals(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments:
        - {provider: up, model: heavy, weight: 3}
        - {provider: up, model: light, weight: 1}
        - {provider: dead, model: backup, priority: 1, weight: 100}
    """
    router = _router(_settings(upstream.base_url, models))
    route = router.resolve("m")
    random.seed(7)
    firsts = Counter(router.order(route)[0].label for _ in range(4000))
    assert set(firsts) == {"up/heavy", "up/light"}
    assert 0.70 < firsts["up/heavy"] / 4000 < 0.80
    assert all(router.order(route)[-1].label == "dead/backup" for _ in range(50))


@settings(deadline=None)  # no wall-clock thresholds: a busy machine is not a failure
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.1, 10)), min_size=1, max_size=6))
def test_order_is_a_permutation_sorted_by_priority(deps: list[tuple[int, float]]) -> None:
    lines = "\n".join(
        f"    - {{provider: up, model: d{i}, priority: {p}, weight: {w}}}" for i, (p, w) in enumerate(deps)
    )
    router = _router(_settings("http://127.0.0.1:9/v1", "m:\n  deployments:\n" + lines))
    order = router.order(router.resolve("m"))
    assert sorted(c.label for c in order) == sorted(f"up/d{i}" for i in range(len(deps)))
    assert [c.deployment.priority for c in order] == sorted(p for p, _ in deps)


def test_tier_keeps_its_model_order(upstream: FakeOpenAI) -> None:
    models = """
    a: {provider: dead, model: a1}
    b:
      deployments:
        - {provider: up, model: b1}
        - {provider: up, model: b2, priority: 1}
    """
    router = _router(_settings(upstream.base_url, models, tiers="gold: {models: [b, a]}"))
    route = router.resolve("gold")
    assert route.is_tier
    assert [c.label for c in router.order(route)] == ["up/b1", "up/b2", "dead/a1"]
    ctx = RequestContext("r")
    _complete(router, "gold", ctx)
    assert (ctx.served_by, ctx.served_model) == ("up/b1", "b")


@pytest.mark.parametrize(("asked", "sent"), [(None, 40), (1000, 40), (10, 10)])
def test_max_tokens_cap_per_attempt(upstream: FakeOpenAI, asked: int | None, sent: int) -> None:
    models = """
    m:
      max_tokens: 100
      deployments: [{provider: up, model: capped-a, max_tokens: 40}]
    """
    router = _router(_settings(upstream.base_url, models))
    body = dict(HELLO) if asked is None else {**HELLO, "max_tokens": asked}
    _complete(router, "m", RequestContext("r"), body)
    assert upstream.requests[-1].body["max_tokens"] == sent
    assert "max_tokens" not in body or body["max_tokens"] == asked  # the caller's body is not modified


def test_cap_uses_max_completion_tokens_when_the_client_does(upstream: FakeOpenAI) -> None:
    router = _router(
        _settings(upstream.base_url, "m: {provider: up, model: cap-mct}\n", tiers="t: {models: [m], max_tokens: 8}")
    )
    _complete(router, "t", RequestContext("r"), {**HELLO, "max_completion_tokens": 500})
    assert upstream.requests[-1].body["max_completion_tokens"] == 8
    assert "max_tokens" not in upstream.requests[-1].body


# ---- fallback and failures -------------------------------------------------------------------------------------


def test_refused_connection_falls_back_to_the_next_deployment(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments:
        - {provider: dead, model: first}
        - {provider: up, model: second, priority: 1}
    """
    ctx = RequestContext("r")
    out = _complete(_router(_settings(upstream.base_url, models)), "m", ctx)
    assert out["choices"][0]["message"]["content"] == "You said: hello"
    assert [(a.deployment, a.outcome) for a in ctx.attempts] == [("dead/first", "unreachable"), ("up/second", "ok")]
    assert "cannot connect" in (ctx.attempts[0].error or "")
    assert ctx.served_by == "up/second"
    assert ctx.upstream_ttfb_ms is not None and ctx.upstream_ttfb_ms >= 0
    assert all("secret" not in (a.error or "") for a in ctx.attempts)


def test_all_unreachable_is_503_listing_what_was_tried(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: dead, model: x}, {provider: dead, model: y}]
    """
    ctx = RequestContext("r")
    with pytest.raises(ProviderUnavailable) as info:
        _complete(_router(_settings(upstream.base_url, models, "max_attempts: 2")), "m", ctx)
    assert info.value.status == 503
    assert info.value.message.startswith("All configured providers for 'm' are unavailable (tried ")
    assert "dead/x: cannot connect" in info.value.message and "dead/y" in info.value.message


def test_mixed_failures_are_502_with_the_last_provider_message(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: up, model: fail-500}, {provider: dead, model: y, priority: 1}]
    """
    ctx = RequestContext("r")
    with pytest.raises(ProviderError) as info:
        _complete(_router(_settings(upstream.base_url, models, "max_attempts: 2")), "m", ctx)
    assert info.value.status == 502
    assert "HTTP 500: fake upstream says 500" in info.value.message
    assert [a.outcome for a in ctx.attempts] == ["error", "unreachable"]
    assert ctx.attempts[0].status == 500


def test_request_fault_is_400_and_not_retried(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: up, model: fail-400}, {provider: up, model: never, priority: 1}]
    """
    ctx = RequestContext("r")
    before = len(upstream.requests)
    with pytest.raises(BadRequest, match="fake upstream says 400"):
        _complete(_router(_settings(upstream.base_url, models)), "m", ctx)
    assert len(upstream.requests) == before + 1
    assert [a.deployment for a in ctx.attempts] == ["up/fail-400"]


def test_429_is_retried_within_max_attempts(upstream: FakeOpenAI) -> None:
    ctx = RequestContext("r")
    before = len(upstream.requests)
    with pytest.raises(ProviderError, match="HTTP 429"):
        _complete(
            _router(_settings(upstream.base_url, "m: {provider: up, model: fail-429}", "max_attempts: 3")), "m", ctx
        )
    assert len(upstream.requests) == before + 3
    assert [a.status for a in ctx.attempts] == [429, 429, 429]


def test_401_moves_on_but_is_not_retried_on_the_same_deployment(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: up, model: fail-401}, {provider: up, model: ok, priority: 1}]
    """
    ctx = RequestContext("r")
    _complete(_router(_settings(upstream.base_url, models, "max_attempts: 4")), "m", ctx)
    assert [(a.deployment, a.status) for a in ctx.attempts] == [("up/fail-401", 401), ("up/ok", 200)]


def test_total_timeout_is_enforced() -> None:
    ctx = RequestContext("r")
    with ScriptedUpstream(["stall"]) as stalled:
        router = _router(_settings(stalled.base_url, "m: {provider: up, model: x}", "total_timeout: 0.2"))
        with pytest.raises(ProviderUnavailable, match="total timeout"):
            _complete(router, "m", ctx)
    assert ctx.attempts[0].outcome == "unreachable"


def test_a_retry_of_the_same_deployment_can_succeed() -> None:
    ctx = RequestContext("r")
    with ScriptedUpstream([503, 200]) as flaky:
        out = _complete(_router(_settings(flaky.base_url, "m: {provider: up, model: x}")), "m", ctx)
    assert out["choices"][0]["message"]["content"] == "ok"
    assert [a.status for a in ctx.attempts] == [503, 200]


# ---- streaming -----------------------------------------------------------------------------------------------------


def test_stream_falls_back_before_the_first_byte(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: dead, model: a}, {provider: up, model: b, priority: 1}]
    """
    ctx = RequestContext("r")

    async def go(r: Router) -> bytes:
        s = await r.stream(r.resolve("m"), {**HELLO, "stream": True}, ctx)
        return b"".join([piece async for piece in s])

    raw = _run(_router(_settings(upstream.base_url, models)), go)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert ctx.served_by == "up/b"
    assert [a.outcome for a in ctx.attempts] == ["unreachable", "ok"]


def test_failure_mid_stream_is_not_retried_and_counts_against_the_circuit(upstream: FakeOpenAI) -> None:
    settings = _settings(upstream.base_url, "m: {provider: up, model: break}", "breaker_failures: 1")
    router = _router(settings)
    ctx = RequestContext("r")
    before = len(upstream.requests)

    async def go(r: Router) -> list[bytes]:
        s = await r.stream(r.resolve("m"), {**HELLO, "stream": True}, ctx)
        got: list[bytes] = []
        with pytest.raises(UpstreamFailure):
            async for piece in s:
                got.append(piece)
        await s.aclose()
        return got

    got = _run(router, go)
    assert got  # the client had bytes before the break
    assert len(upstream.requests) == before + 1
    assert router.health()["deployments"]["up/break"]["state"] == "open"


def test_total_timeout_cuts_a_stream_that_runs_past_it(upstream: FakeOpenAI) -> None:
    router = _router(_settings(upstream.base_url, "m: {provider: up, model: slow}", "total_timeout: 0.5"))
    ctx = RequestContext("r")

    async def go(r: Router) -> tuple[int, str]:
        s = await r.stream(r.resolve("m"), {**HELLO, "stream": True}, ctx)
        got = 0
        try:
            async for _piece in s:
                got += 1
        except UpstreamFailure as f:
            return got, f.message
        finally:
            await s.aclose()
        return got, "ended without an error"

    got, message = _run(router, go)
    assert got > 0  # bytes flowed before the deadline
    assert message == "the total timeout ran out mid-stream"


def test_anthropic_deployment_behind_an_openai_one() -> None:
    with FakeAnthropic() as claude:
        text = f"""
providers:
  dead: {{type: openai, base_url: "http://127.0.0.1:{free_port()}/v1", connect_timeout: 1}}
  claude: {{type: anthropic, base_url: "{claude.base_url}", api_key: {API_KEY}}}
models:
  m:
    deployments: [{{provider: dead, model: gpt}}, {{provider: claude, model: claude-x, priority: 1}}]
"""
        ctx = RequestContext("r")
        out = _complete(_router(parse_settings(text)), "m", ctx)
    assert out["choices"][0]["message"]["content"] == "You said: hello"
    assert ctx.served_by == "claude/claude-x"


# ---- circuit breaker ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_open_circuit_is_skipped_then_probed_and_closed(upstream: FakeOpenAI) -> None:
    models = """
    m:
      deployments: [{provider: up, model: flaky}, {provider: up, model: spare, priority: 1}]
    """
    router = _router(_settings(upstream.base_url, models, "breaker_failures: 2\nbreaker_cooldown: 30"))
    clock = Clock()
    router.breakers = BreakerBoard(2, 30.0, clock)
    flaky = router.breakers.get("up/flaky")
    flaky.failure("HTTP 500")
    flaky.failure("HTTP 500")

    async def go(r: Router) -> list[RequestContext]:
        ctxs = []
        for step in range(2):
            ctx = RequestContext(f"r{step}")
            await r.complete(r.resolve("m"), HELLO, ctx)
            ctxs.append(ctx)
            clock.t += 31
        return ctxs

    skipped, probed = _run(router, go)
    assert [(a.deployment, a.outcome) for a in skipped.attempts] == [("up/flaky", "circuit_open"), ("up/spare", "ok")]
    assert skipped.attempts[0].latency_ms == 0.0
    assert [(a.deployment, a.outcome) for a in probed.attempts] == [("up/flaky", "ok")]
    assert router.health()["deployments"]["up/flaky"]["state"] == "closed"


def test_circuit_open_everywhere_is_503(upstream: FakeOpenAI) -> None:
    router = _router(
        _settings(upstream.base_url, "m: {provider: dead, model: z}", "breaker_failures: 1\nmax_attempts: 1")
    )

    async def go(r: Router) -> tuple[RequestContext, ProviderUnavailable]:
        with pytest.raises(ProviderUnavailable):
            await r.complete(r.resolve("m"), HELLO, RequestContext("a"))
        ctx = RequestContext("b")
        with pytest.raises(ProviderUnavailable) as info:
            await r.complete(r.resolve("m"), HELLO, ctx)
        return ctx, info.value

    ctx, err = _run(router, go)
    assert [a.outcome for a in ctx.attempts] == ["circuit_open"]
    assert "dead/z: circuit open" in err.message
    health = router.health()
    assert health["status"] == "down"
    assert health["models"]["m"] == "down"
    assert health["deployments"]["dead/z"]["state"] == "open"


def test_health_is_ok_when_every_circuit_is_closed(upstream: FakeOpenAI) -> None:
    router = _router(_settings(upstream.base_url, "m: {provider: up, model: x}\nn: {provider: dead, model: y}"))
    health = router.health()
    assert health["status"] == "ok"
    assert set(health["deployments"]) == {"up/x", "dead/y"}
    assert health["deployments"]["up/x"]["state"] == "closed"


# ---- Retry-After -------------------------------------------------------------------------------------------------
# The providers' real HttpClient over a scripted transport (no network): a step is (status, Retry-After or None).


class _Body(StreamBody):
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self._data = data

    async def read(self) -> bytes:
        return self._data

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._data

    def close(self) -> None:
        pass


class _ScriptedTransport:
    def __init__(self, *steps: tuple[int, str | None]) -> None:
        self.steps = steps
        self.calls = 0

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody:
        status, retry_after = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if status == 200:
            msg = {"role": "assistant", "content": "ok"}
            data = {"id": "c", "object": "chat.completion", "created": 0, "model": "x"}
            data["choices"] = [{"index": 0, "message": msg, "finish_reason": "stop"}]
            return _Body(200, {}, orjson.dumps(data))
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return _Body(status, headers, orjson.dumps({"error": {"message": f"scripted {status}"}}))

    async def aclose(self) -> None:
        pass


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The router's waits, recorded instead of slept."""
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(route_module, "_sleep", fake_sleep)
    return waits


def _scripted_router(routing: str, models: str, **transports: _ScriptedTransport) -> Router:
    router = _router(_settings("http://127.0.0.1:9/v1", models, routing))
    for name, transport in transports.items():
        router.providers[name].client._transport = transport
    return router


def test_retry_after_is_waited_before_retrying_the_same_deployment(sleeps: list[float]) -> None:
    up = _ScriptedTransport((429, "3"), (200, None))
    router = _scripted_router("retry_backoff: 0", "m: {provider: up, model: x}", up=up)
    ctx = RequestContext("r")
    assert _complete(router, "m", ctx)["choices"][0]["message"]["content"] == "ok"
    assert [a.status for a in ctx.attempts] == [429, 200]
    assert [s for s in sleeps if s > 0] and 2.5 < max(sleeps) <= 3.0


def test_retry_after_moves_on_to_the_next_candidate_without_waiting(sleeps: list[float]) -> None:
    models = """
    m:
      deployments: [{provider: up, model: x}, {provider: dead, model: y, priority: 1}]
    """
    up, dead = _ScriptedTransport((503, "5")), _ScriptedTransport((200, None))
    ctx = RequestContext("r")
    _complete(_scripted_router("", models, up=up, dead=dead), "m", ctx)
    assert [(a.deployment, a.status) for a in ctx.attempts] == [("up/x", 503), ("dead/y", 200)]
    assert sleeps == []


def test_retry_after_beyond_the_cap_takes_the_deployment_out_of_the_retries(sleeps: list[float]) -> None:
    up = _ScriptedTransport((429, "60"), (200, None))
    router = _scripted_router("retry_after_max: 10\nmax_attempts: 4", "m: {provider: up, model: x}", up=up)
    ctx = RequestContext("r")
    with pytest.raises(ProviderError, match="HTTP 429: scripted 429"):
        _complete(router, "m", ctx)
    assert up.calls == 1 and sleeps == []


def test_retry_after_past_the_total_timeout_is_not_waited(sleeps: list[float]) -> None:
    up = _ScriptedTransport((503, "8"), (200, None))
    router = _scripted_router("total_timeout: 5\nretry_after_max: 30", "m: {provider: up, model: x}", up=up)
    with pytest.raises(ProviderError, match="HTTP 503"):
        _complete(router, "m", RequestContext("r"))
    assert up.calls == 1 and sleeps == []


def test_retry_after_max_zero_ignores_the_header(sleeps: list[float]) -> None:
    up = _ScriptedTransport((429, "60"), (200, None))
    router = _scripted_router("retry_after_max: 0\nretry_backoff: 0.01", "m: {provider: up, model: x}", up=up)
    ctx = RequestContext("r")
    _complete(router, "m", ctx)
    assert [a.status for a in ctx.attempts] == [429, 200]
    assert len(sleeps) == 1 and sleeps[0] <= 0.01  # the ordinary backoff only


def test_error_ratio_setting_reaches_the_breakers() -> None:
    routing = "breaker_failures: 50\nbreaker_error_ratio: 0.5\nbreaker_window: 4\nbreaker_min_calls: 2\nmax_attempts: 1"
    up = _ScriptedTransport((500, None), (200, None), (500, None))
    router = _scripted_router(routing, "m: {provider: up, model: x}", up=up)

    async def three() -> None:
        for _ in range(3):
            with contextlib.suppress(ProviderError, ProviderUnavailable):
                await router.complete(router.resolve("m"), dict(HELLO), RequestContext("r"))

    _run(router, lambda r: three())
    snap = router.health()["deployments"]["up/x"]
    assert snap["state"] == "open"  # 500, 200, 500: two failures in three calls, never two in a row
    assert snap["consecutive_failures"] == 1


@pytest.mark.parametrize(
    ("routing", "problem"),
    [
        ("breaker_error_ratio: 1.5", "routing.breaker_error_ratio: must be a ratio in (0, 1]"),
        ("breaker_error_ratio: 0", "routing.breaker_error_ratio: must be a number > 0"),
        ("breaker_window: 5\nbreaker_min_calls: 6", "routing.breaker_min_calls: must be at most breaker_window (5)"),
        ("retry_after_max: -1", "routing.retry_after_max: must be a number >= 0"),
    ],
)
def test_routing_options_are_validated(routing: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        _settings("http://127.0.0.1:9/v1", "m: {provider: up}", routing)
    assert problem in str(e.value)
