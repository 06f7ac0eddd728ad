"""The Redis backend (workjet_fast.pipeline.limits_redis) against a real Redis: several limiter instances stand for
several gateway processes sharing one server."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from workjet_fast.config.limits import LimitsConfig, LimitSpec
from workjet_fast.errors import RateLimited
from workjet_fast.pipeline.limits import Admission, MemoryLimiter
from workjet_fast.pipeline.limits_redis import RedisLimiter

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("WORKJET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached: {e}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"test:limits:{uuid.uuid4().hex}:"
    yield p
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=p + "*"))
    if keys:
        client.delete(*keys)
    client.close()


class FakeClock:
    """Microseconds, shared by the limiters of a test in place of Redis TIME."""

    def __init__(self) -> None:
        self.now = 100_000_000_000_000  # µs, the magnitude of the script's TIME-based clock

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1_000_000)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


@asynccontextmanager
async def limiters(
    n: int, url: str, prefix: str, clock: FakeClock | None = None, **cfg: object
) -> AsyncIterator[list[RedisLimiter]]:
    config = LimitsConfig(backend="redis", redis_url=url, redis_prefix=prefix, **cfg)  # type: ignore[arg-type]
    made = [RedisLimiter(config, clock_us=clock) for _ in range(n)]
    try:
        yield made
    finally:
        for lim in made:
            await lim.aclose()


async def try_admit(lim: RedisLimiter, spec: LimitSpec, prompt: int = 0, key: str = "k") -> Admission | RateLimited:
    try:
        return await lim.admit(key, spec, prompt, 0)
    except RateLimited as e:
        return e


def admitted(results: list[Admission | RateLimited]) -> int:
    return sum(isinstance(r, Admission) for r in results)


# ---- one global limit across instances --------------------------------------------------------------------------


def test_concurrent_burst_across_two_instances_admits_exactly_the_limit(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        async with limiters(2, redis_url, prefix) as (a, b):
            for spec in (LimitSpec(concurrency=7), LimitSpec(rpm=7)):
                key = f"burst-{spec.rpm}"
                results = await asyncio.gather(*(try_admit((a, b)[i % 2], spec, key=key) for i in range(7 + 13)))
                assert admitted(results) == 7
                refusals = [r for r in results if isinstance(r, RateLimited)]
                assert all("Retry-After" in r.headers for r in refusals)
            total = a.stats()["admitted"] + b.stats()["admitted"]
            assert total == 14

    run(go)


def test_window_boundary_is_shared(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        clock = FakeClock()
        async with limiters(2, redis_url, prefix, clock) as (a, b):
            spec = LimitSpec(rpm=6)
            assert admitted([await try_admit((a, b)[i % 2], spec) for i in range(6)]) == 6
            refused = await try_admit(b, spec)
            assert isinstance(refused, RateLimited) and refused.headers["Retry-After"] == "10"
            clock.advance(9.999)
            assert isinstance(await try_admit(a, spec), RateLimited)
            clock.advance(0.001)
            assert isinstance(await try_admit(b, spec), Admission)
            assert isinstance(await try_admit(a, spec), RateLimited)
            clock.advance(3600)
            assert admitted([await try_admit((a, b)[i % 2], spec) for i in range(8)]) == 6

    run(go)


def test_tokens_reserved_on_one_instance_are_reconciled_for_all(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        clock = FakeClock()
        async with limiters(2, redis_url, prefix, clock, completion_estimate=500) as (a, b):
            spec = LimitSpec(tpm=10_000)
            first = await a.admit("k", spec, 1000, None)
            assert first.reserved == 1500
            second = await b.admit("k", spec, 0, 0)
            assert second.headers["x-ratelimit-remaining-tokens"] == "8500"
            await a.settle(first, 1000, 20)  # 480 back
            await a.settle(first, 1000, 20)  # idempotent
            third = await b.admit("k", spec, 0, 0)
            assert third.headers["x-ratelimit-remaining-tokens"] == "8980"
            await b.settle(third, 0, 4000)  # more than reserved: charged
            fourth = await a.admit("k", spec, 0, 0)
            assert fourth.headers["x-ratelimit-remaining-tokens"] == "4980"
            assert fourth.headers["x-ratelimit-reset-tokens"] == "30.12s"  # 5020 tokens at 10000/min
            big = await try_admit(b, spec, prompt=6000)
            assert isinstance(big, RateLimited) and "tokens per minute" in big.message

    run(go)


# ---- concurrency slots ------------------------------------------------------------------------------------------


def test_slot_taken_on_one_instance_is_freed_by_its_settle(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        async with limiters(2, redis_url, prefix) as (a, b):
            spec = LimitSpec(concurrency=1)
            held = await a.admit("k", spec, 0, None)
            refused = await try_admit(b, spec)
            assert isinstance(refused, RateLimited) and "concurrent requests" in refused.message
            await a.settle(held, 0, 0)  # e.g. after the upstream failed
            assert isinstance(await try_admit(b, spec), Admission)

    run(go)


def test_slot_is_freed_when_the_request_task_is_cancelled(redis_url: str, prefix: str) -> None:
    """A client that disconnects cancels the request task; settle runs in its `finally` and must still land."""

    async def go() -> None:
        async with limiters(2, redis_url, prefix) as (a, b):
            spec = LimitSpec(concurrency=1)
            admitted_evt = asyncio.Event()

            async def request() -> None:
                admission = await a.admit("k", spec, 0, None)
                try:
                    admitted_evt.set()
                    await asyncio.Event().wait()  # the upstream call the client gives up on
                finally:
                    await a.settle(admission, 0, 0)

            task = asyncio.create_task(request())
            await admitted_evt.wait()
            assert isinstance(await try_admit(b, spec), RateLimited)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.gather(*a._pending)  # the shielded settlement may outlive the cancelled task
            assert isinstance(await try_admit(b, spec), Admission)

    run(go)


def test_slots_of_a_dead_process_expire_and_live_ones_are_renewed(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        clock = FakeClock()
        async with limiters(3, redis_url, prefix, clock, lease_seconds=30.0) as (dead, alive, other):
            spec = LimitSpec(concurrency=2)
            await dead.admit("k", spec, 0, None)  # never settled: its process is gone
            await alive.admit("k", spec, 0, None)  # still streaming
            assert isinstance(await try_admit(other, spec), RateLimited)
            clock.advance(20)
            await alive.renew_leases()  # what the background task of a live process does every 10 s
            clock.advance(10.001)
            assert isinstance(await try_admit(other, spec), Admission)  # the dead lease expired
            assert isinstance(await try_admit(other, spec), RateLimited)  # the renewed one holds

    run(go)


# ---- Redis outage and recovery ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_redis_stopped_mid_test_applies_the_fail_mode_then_recovers(
    throwaway_redis: ThrowawayRedis, fail_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workjet.limits")

    async def go() -> None:
        async with limiters(1, throwaway_redis.url, "t:", fail_mode=fail_mode, redis_timeout=0.5) as (lim,):
            spec = LimitSpec(rpm=2, concurrency=5)
            held = await lim.admit("k", spec, 0, None)
            throwaway_redis.stop()
            await lim.settle(held, 0, 0)  # lost, counted, never raised
            outcomes = [await try_admit(lim, spec) for _ in range(3)]
            if fail_mode == "closed":
                assert all(isinstance(r, RateLimited) and r.headers == {"Retry-After": "1"} for r in outcomes)
            else:
                assert all(isinstance(r, Admission) and r.headers == {} for r in outcomes)
                for r in outcomes:
                    assert isinstance(r, Admission)
                    await lim.settle(r, 0, 0)  # nothing to settle: no round trip, no error
            stats = lim.stats()
            assert stats["backend_errors"] == 4
            assert stats["fail_open_admissions"] == (3 if fail_mode == "open" else 0)
            warnings = [r for r in caplog.records if r.name == "workjet.limits" and r.levelname == "WARNING"]
            assert len(warnings) == 1  # rate-limited: one line for the burst of failures

            throwaway_redis.start()  # same port, empty: the client reconnects and reloads its scripts
            after = [await try_admit(lim, spec) for _ in range(3)]
            assert [isinstance(r, Admission) for r in after] == [True, True, False]
            assert lim.stats()["backend_errors"] == 4
            assert any("reachable again" in r.getMessage() for r in caplog.records)

    run(go)


def test_one_round_trip_per_admit_and_per_settle(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        async with limiters(1, redis_url, prefix) as (lim,):
            calls: list[str] = []
            real = lim._redis.execute_command

            async def counting(*args: object, **kwargs: object) -> object:
                calls.append(str(args[0]))
                return await real(*args, **kwargs)

            lim._redis.execute_command = counting  # type: ignore[method-assign]
            spec = LimitSpec(rpm=100, tpm=100_000, concurrency=10)
            a = await lim.admit("k", spec, 10, 10)
            assert calls == ["EVALSHA"] or calls == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]  # first use loads it
            calls.clear()
            await lim.settle(a, 10, 5)
            assert calls == ["EVALSHA"] or calls == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
            calls.clear()
            b = await lim.admit("k", spec, 10, 10)
            await lim.settle(b, 10, 10)  # reservation exact: only the slot to free
            assert calls == ["EVALSHA", "EVALSHA"]
            calls.clear()
            c = await lim.admit("k", LimitSpec(rpm=100), 10, 10)
            await lim.settle(c, 10, 10)  # nothing to correct, nothing to free: no round trip
            assert calls == ["EVALSHA"]

    run(go)


# ---- the Lua script and the in-process limiter implement the same algorithm ------------------------------------

_STEP = st.tuples(
    st.integers(min_value=0, max_value=15_000),  # ms since the previous step
    st.integers(min_value=0, max_value=400),  # prompt tokens
    st.sampled_from([None, 0, 50, 300]),  # max completion tokens
    st.integers(min_value=0, max_value=400),  # completion tokens actually used
    st.booleans(),  # settle right away (else the request stays in flight)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.builds(
        LimitSpec,
        rpm=st.sampled_from([None, 1, 3, 7, 60]),
        tpm=st.sampled_from([None, 500, 1000, 7777]),
        concurrency=st.sampled_from([None, 1, 2, 5]),
    ),
    steps=st.lists(_STEP, min_size=1, max_size=25),
)
def test_redis_and_memory_backends_decide_alike(redis_url: str, spec: LimitSpec, steps: list[Step]) -> None:
    async def go() -> None:
        us = FakeClock()
        mem = MemoryLimiter(LimitsConfig(completion_estimate=100), clock=lambda: us.now / 1e6)
        prefix = f"test:limits:{uuid.uuid4().hex}:"
        async with limiters(1, redis_url, prefix, us, completion_estimate=100, lease_seconds=3600.0) as (red,):
            for gap_ms, prompt, max_c, used, settle_now in steps:
                us.advance(gap_ms / 1000)
                outcomes = []
                for lim in (mem, red):
                    try:
                        a = await lim.admit("k", spec, prompt, max_c)
                    except RateLimited as e:
                        outcomes.append(("refused", e.message, e.headers))
                        continue
                    outcomes.append(("admitted", a.reserved, a.headers))
                    if settle_now:
                        await lim.settle(a, prompt, used)
                _assert_alike(outcomes[0], outcomes[1])
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()

    run(go)


Step = tuple[int, int, int | None, int, bool]


def _assert_alike(mem: tuple[str, object, dict[str, str]], red: tuple[str, object, dict[str, str]]) -> None:
    """Decisions, messages and Retry-After match exactly; remaining counts may differ by one and reset durations
    by a millisecond where Redis's µs doubles round differently from the in-process clock."""
    assert mem[:2] == red[:2]
    assert mem[2].keys() == red[2].keys()
    for name, value in mem[2].items():
        if "remaining" in name:
            assert abs(int(value) - int(red[2][name])) <= 1, (name, value, red[2][name])
        elif "reset" not in name:
            assert value == red[2][name], name


def test_a_bound_refused_for_tokens_is_decided_on_the_exact_count(redis_url: str, prefix: str) -> None:
    """Admission on an upper bound of the prompt (see `Limiter.admit`): one more round trip when the bound is
    refused for tokens, the decision made on the count, and one refusal counted."""

    async def go() -> None:
        calls: list[int] = []

        async def exact() -> int:
            calls.append(100)
            return 100

        clock = FakeClock()
        async with limiters(1, redis_url, prefix, clock) as (lim,):
            spec = LimitSpec(tpm=1000)
            await lim.admit("k", spec, 850, 0)
            fits = await lim.admit("k", spec, 300, 20, exact)  # the bound (320) does not fit; the count (120) does
            assert fits.reserved == 120 and len(calls) == 1
            try:
                await lim.admit("k", spec, 300, 20, exact)
            except RateLimited as e:
                assert e.headers["Retry-After"] == "6"  # the wait for the count's 120 tokens
            else:
                raise AssertionError("admitted over the budget")
            assert len(calls) == 2 and lim.stats()["rejected_tokens"] == 1
            roomy = await lim.admit("k2", spec, 300, 20, exact)  # the bound fits: no count
            assert roomy.reserved == 320 and len(calls) == 2

    run(go)
