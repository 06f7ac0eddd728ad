"""admit + settle, per request: no limiter (baseline), the in-process backend, and the Redis backend, in one run.

Each benchmark round runs `OPS` admit+settle pairs on one event loop, so the figures divided by `OPS` are the cost
per request including the await overhead the request path pays anyway (the baseline has the same two awaits).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio as aredis
from pytest_benchmark.fixture import BenchmarkFixture

from workjet_fast.config.limits import LimitsConfig, LimitSpec
from workjet_fast.pipeline.limits import Admission, Limiter, MemoryLimiter
from workjet_fast.pipeline.limits_redis import RedisLimiter

OPS = 1000
REDIS_URL = os.environ.get("WORKJET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SPEC = LimitSpec(rpm=10**9, tpm=10**12, concurrency=10**6)  # every limit checked, none ever reached


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _run(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, batch: Callable[[], Awaitable[int]], rounds: int
) -> None:
    done = benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=rounds, warmup_rounds=1)
    assert done == OPS
    benchmark.extra_info["requests_per_round"] = OPS


class _NoLimiter:
    _ADM = Admission("k", LimitSpec(), 0, None, None)

    async def admit(self, key_id: str, spec: LimitSpec, prompt: int, max_completion: int | None) -> Admission:
        return self._ADM

    async def settle(self, admission: Admission, prompt: int, completion: int) -> None:
        return None


def _batch(lim: Limiter | _NoLimiter, spec: LimitSpec) -> Callable[[], Awaitable[int]]:
    async def batch() -> int:
        n = 0
        for _ in range(OPS):
            a = await lim.admit("bench-key", spec, 100, 50)
            try:
                n += len(a.header_pairs()) >= 0  # the headers as the request path builds them
            finally:
                await lim.settle(a, 100, 30)
        return n

    return batch


@pytest.mark.benchmark(group="limits: admit+settle x1000")
def test_bench_no_limiter_baseline(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    _run(benchmark, loop, _batch(_NoLimiter(), SPEC), rounds=200)


@pytest.mark.benchmark(group="limits: admit+settle x1000")
def test_bench_memory_no_limits_set(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    _run(benchmark, loop, _batch(MemoryLimiter(LimitsConfig()), LimitSpec()), rounds=200)


@pytest.mark.benchmark(group="limits: admit+settle x1000")
def test_bench_memory_all_limits(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    _run(benchmark, loop, _batch(MemoryLimiter(LimitsConfig()), SPEC), rounds=200)


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached: {e}")


@pytest.mark.redis
@pytest.mark.benchmark(group="limits: admit+settle x1000")
def test_bench_redis_two_pings_floor(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The floor for the Redis backend: two bare round trips with the same client library."""
    _redis_or_skip()
    client = aredis.Redis.from_url(REDIS_URL)

    async def batch() -> int:
        for _ in range(OPS):
            await client.ping()
            await client.ping()
        return OPS

    try:
        _run(benchmark, loop, batch, rounds=10)
    finally:
        loop.run_until_complete(client.aclose())


@pytest.mark.redis
@pytest.mark.benchmark(group="limits: admit+settle x1000")
def test_bench_redis_all_limits(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    _redis_or_skip()
    prefix = f"bench:limits:{uuid.uuid4().hex}:"
    lim = RedisLimiter(LimitsConfig(backend="redis", redis_url=REDIS_URL, redis_prefix=prefix))
    try:
        _run(benchmark, loop, _batch(lim, SPEC), rounds=10)
    finally:
        loop.run_until_complete(lim.aclose())
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
