"""The limiter API and the in-process backend (workjet_fast.pipeline.limits), on a fake clock."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings, strategies as st

from workjet_fast.config import ConfigError
from workjet_fast.config._reader import Problem, Section, load_yaml
from workjet_fast.config.limits import LimitsConfig, LimitSpec, read_limits
from workjet_fast.errors import RateLimited
from workjet_fast.pipeline.limits import Admission, MemoryLimiter, go_duration, make_limiter, ratelimit_headers

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


def limiter(**cfg: object) -> tuple[MemoryLimiter, FakeClock]:
    clock = FakeClock()
    return MemoryLimiter(LimitsConfig(**cfg), clock=clock), clock  # type: ignore[arg-type]


async def try_admit(
    lim: MemoryLimiter,
    spec: LimitSpec,
    prompt: int = 0,
    max_completion: int | None = 0,
    key: str = "k",
    exact: Callable[[], Awaitable[int]] | None = None,
) -> Admission | RateLimited:
    try:
        return await lim.admit(key, spec, prompt, max_completion, exact)
    except RateLimited as e:
        return e


# ---- Go durations -----------------------------------------------------------------------------------------------


def test_go_duration_matches_go_formatting() -> None:
    assert go_duration(0) == "0s"
    assert go_duration(-3) == "0s"
    assert go_duration(0.012) == "12ms"
    assert go_duration(0.0121) == "13ms"  # rounded up: never announce a reset earlier than it happens
    assert go_duration(1) == "1s"
    assert go_duration(1.5) == "1.5s"
    assert go_duration(360) == "6m0s"
    assert go_duration(61.25) == "1m1.25s"
    assert go_duration(3725) == "1h2m5s"


_LIMIT = st.one_of(st.none(), st.integers(min_value=1, max_value=2**60))
_LEVEL = st.one_of(
    st.floats(min_value=-1.0, max_value=4000.0),
    st.sampled_from([0.0, 60.0, 60.000001, 0.0005, 0.0009999, 1.0 - 1e-9, 59.999999]),
)


@settings(max_examples=400)
@given(rpm=_LIMIT, tpm=_LIMIT, rpm_level=_LEVEL, tpm_level=_LEVEL)
def test_header_pairs_are_the_python_headers(
    rpm: int | None, tpm: int | None, rpm_level: float, tpm_level: float
) -> None:
    # The request path's bytes (Rust, or Python's own above 2**53) say what `ratelimit_headers` says.
    spec = LimitSpec(rpm=rpm, tpm=tpm, concurrency=None)
    pairs = Admission("k", spec, 0, None, (rpm_level, tpm_level)).header_pairs()
    want = ratelimit_headers(spec, rpm_level, tpm_level)
    assert pairs == [(k.encode(), v.encode()) for k, v in want.items()]
    assert Admission("k", spec, 0, None, None).header_pairs() == []


_GO = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?$|^(\d+)ms$")


@given(st.integers(min_value=0, max_value=10 * 3_600_000))
def test_go_duration_parses_back_to_the_same_milliseconds(ms: int) -> None:
    text = go_duration(ms / 1000)
    m = _GO.match(text)
    assert m is not None, text
    if m.group(4) is not None:
        back = int(m.group(4))
        assert back < 1000
    else:
        h, mi, s = m.group(1), m.group(2), m.group(3)
        back = round((int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)) * 1000)
    assert back == ms


# ---- effective limits -------------------------------------------------------------------------------------------


def test_spec_for_layers_key_over_model_or_tier_over_default() -> None:
    lim, _ = limiter(
        default=LimitSpec(rpm=10, tpm=1000, concurrency=2),
        per_tier={"premium": LimitSpec(rpm=100, concurrency=0)},
        per_model={"gpt-4o": LimitSpec(tpm=50)},
    )
    assert lim.spec_for({}, "unknown", False) == LimitSpec(10, 1000, 2)
    assert lim.spec_for({}, "premium", True) == LimitSpec(100, 1000, None)  # 0 removes, absent inherits
    assert lim.spec_for({}, "premium", False) == LimitSpec(10, 1000, 2)  # a model of that name has no entry
    assert lim.spec_for({}, "gpt-4o", False) == LimitSpec(10, 50, 2)
    assert lim.spec_for({"rpm": 7}, "gpt-4o", False) == LimitSpec(7, 50, 2)
    assert lim.spec_for({"tpm": None, "concurrency": 0}, "gpt-4o", False) == LimitSpec(10, None, None)


def test_spec_for_rejects_malformed_key_limits() -> None:
    lim, _ = limiter()
    for bad in ("10", -1, 1.5, True):
        with pytest.raises(ValueError, match="rpm"):
            lim.spec_for({"rpm": bad}, "m", False)


def test_make_limiter_refuses_per_process_limits_with_several_workers() -> None:
    with pytest.raises(ConfigError, match="accept_per_process_limits"):
        make_limiter(LimitsConfig(), workers=4)
    assert isinstance(make_limiter(LimitsConfig(), workers=1), MemoryLimiter)
    assert isinstance(make_limiter(LimitsConfig(accept_per_process_limits=True), workers=4), MemoryLimiter)


def test_read_limits_reads_every_option_and_reports_problems() -> None:
    raw = load_yaml(
        """
backend: redis
redis_url: redis://cache:6379/2
fail_mode: open
completion_estimate: 1000
lease_seconds: 12
default: {rpm: 60, tpm: 0}
tiers:
  premium: {rpm: 600}
models:
  gpt-4o: {concurrency: 3}
  nope: {rpm: 1}
"""
    )
    problems: list[Problem] = []
    cfg = read_limits(Section(raw, "limits", problems), {"premium", "gpt-4o"})
    assert cfg.backend == "redis" and cfg.redis_url == "redis://cache:6379/2" and cfg.fail_mode == "open"
    assert cfg.completion_estimate == 1000 and cfg.lease_seconds == 12
    assert cfg.default == LimitSpec(rpm=60, tpm=0)
    assert cfg.per_tier == {"premium": LimitSpec(rpm=600)}
    assert cfg.per_model["gpt-4o"] == LimitSpec(concurrency=3)
    assert [p.path for p in problems] == ["limits.models.nope"]

    problems = []
    read_limits(Section(load_yaml("redis_url: http://x\nlease_seconds: 1\nrpm: 3"), "limits", problems), set())
    assert sorted(p.path for p in problems) == ["limits.lease_seconds", "limits.redis_url", "limits.rpm"]


# ---- requests per minute ----------------------------------------------------------------------------------------


def test_rpm_allows_a_full_minute_at_once_then_one_per_interval() -> None:
    async def go() -> None:
        lim, clock = limiter()
        spec = LimitSpec(rpm=6)  # one request per 10 s, bucket of 6
        for i in range(6):
            a = await lim.admit("k", spec, 0, None)
            assert a.headers["x-ratelimit-remaining-requests"] == str(5 - i)
        refused = await try_admit(lim, spec)
        assert isinstance(refused, RateLimited)
        assert "requests per minute" in refused.message
        assert refused.headers["Retry-After"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
        clock.now += 9.999  # just before the boundary: still refused, and told to wait the rest (rounded up)
        refused = await try_admit(lim, spec)
        assert isinstance(refused, RateLimited) and refused.headers["Retry-After"] == "1"
        clock.now += 0.001  # exactly on the boundary: one request, not two
        assert isinstance(await try_admit(lim, spec), Admission)
        assert isinstance(await try_admit(lim, spec), RateLimited)
        clock.now += 3600  # a long idle period refills to the bucket's capacity, never beyond
        results = [await try_admit(lim, spec) for _ in range(7)]
        assert [isinstance(r, Admission) for r in results] == [True] * 6 + [False]

    run(go)


def test_keys_have_separate_budgets() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(rpm=1)
        assert isinstance(await try_admit(lim, spec, key="a"), Admission)
        assert isinstance(await try_admit(lim, spec, key="b"), Admission)
        assert isinstance(await try_admit(lim, spec, key="a"), RateLimited)

    run(go)


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=30),
    gaps_ms=st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=80),
)
def test_rpm_never_admits_more_than_the_bucket_allows(rpm: int, gaps_ms: list[int]) -> None:
    """Over any span of S seconds at most rpm * (1 + S/60) requests pass; after a refusal, waiting Retry-After
    seconds is always enough."""

    async def go() -> None:
        lim, clock = limiter()
        spec = LimitSpec(rpm=rpm)
        admitted: list[float] = []
        for gap in gaps_ms:
            clock.now += gap / 1000
            r = await try_admit(lim, spec)
            if isinstance(r, Admission):
                admitted.append(clock.now)
            else:
                wait = int(r.headers["Retry-After"])
                assert wait >= 1
                probe, _ = limiter()
                probe._rpm_tat = dict(lim._rpm_tat)
                probe._clock.now = clock.now + wait  # type: ignore[attr-defined]
                assert isinstance(await try_admit(probe, spec), Admission)
        for i, start in enumerate(admitted):
            for j in range(i, len(admitted)):
                span = admitted[j] - start
                assert j - i + 1 <= rpm * (1 + span / 60) + 1e-6

    run(go)


# ---- tokens per minute ------------------------------------------------------------------------------------------


def test_tokens_are_reserved_then_reconciled() -> None:
    async def go() -> None:
        lim, _ = limiter(completion_estimate=500)
        spec = LimitSpec(tpm=10_000)
        a = await lim.admit("k", spec, 1000, None)  # no max: reserve the estimate
        assert a.reserved == 1500
        assert a.headers["x-ratelimit-remaining-tokens"] == "8500"
        b = await lim.admit("k", spec, 1000, 100)  # a smaller max wins
        assert b.reserved == 1100
        await lim.settle(a, 1000, 20)  # used 1020 of 1500: 480 back
        await lim.settle(b, 1000, 100)
        c = await lim.admit("k", spec, 0, 0)
        assert c.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 1020 - 1100)
        await lim.settle(c, 0, 3000)  # more than reserved: the debt is charged too
        d = await lim.admit("k", spec, 0, 0)
        assert d.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 1020 - 1100 - 3000)

    run(go)


def test_a_burst_of_large_prompts_stops_at_the_budget() -> None:
    async def go() -> None:
        lim, _ = limiter(completion_estimate=200)
        spec = LimitSpec(tpm=1000)
        results = [await try_admit(lim, spec, prompt=300, max_completion=None) for _ in range(5)]  # 500 each
        assert [isinstance(r, Admission) for r in results] == [True, True, False, False, False]
        refused = results[2]
        assert isinstance(refused, RateLimited) and "tokens per minute" in refused.message
        assert refused.headers["Retry-After"] == "30"  # 500 tokens at 1000/min
        assert lim.stats()["rejected_tokens"] == 3

    run(go)


def test_a_prompt_larger_than_the_budget_is_refused_without_retry_after() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(tpm=1000)
        refused = await try_admit(lim, spec, prompt=1001)
        assert isinstance(refused, RateLimited) and "Request too large" in refused.message
        assert "Retry-After" not in refused.headers
        capped = await lim.admit("k", spec, 900, 5000)  # fits alone: the completion estimate is capped
        assert capped.reserved == 1000

    run(go)


# ---- concurrency, settle, headers, stats ------------------------------------------------------------------------


def test_concurrency_slots_are_freed_by_settle_exactly_once() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(concurrency=2)
        a = await lim.admit("k", spec, 0, None)
        await lim.admit("k", spec, 0, None)
        refused = await try_admit(lim, spec)
        assert isinstance(refused, RateLimited) and "concurrent requests" in refused.message
        assert refused.headers["Retry-After"] == "1"
        await lim.settle(a, 0, 0)
        await lim.settle(a, 0, 0)  # idempotent: does not free a second slot
        assert isinstance(await try_admit(lim, spec), Admission)
        assert isinstance(await try_admit(lim, spec), RateLimited)

    run(go)


def test_headers_only_for_limits_that_exist() -> None:
    async def go() -> None:
        lim, _ = limiter()
        a = await lim.admit("k", LimitSpec(rpm=60, concurrency=3), 10, None)
        assert set(a.headers) == {
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        }
        assert a.headers["x-ratelimit-reset-requests"] == "1s"
        b = await lim.admit("k", LimitSpec(), 10, None)
        assert b.headers == {} and b.lease is None
        await lim.settle(b, 10, 10)

    run(go)


def test_all_limits_hit_are_named_and_retry_after_is_the_longest_wait() -> None:
    async def go() -> None:
        lim, _ = limiter(completion_estimate=0)
        spec = LimitSpec(rpm=1, tpm=100, concurrency=1)
        await lim.admit("k", spec, 100, None)
        refused = await try_admit(lim, spec, prompt=100)
        assert isinstance(refused, RateLimited)
        for name in ("requests per minute", "tokens per minute", "concurrent requests"):
            assert name in refused.message
        assert refused.headers["Retry-After"] == "60"
        assert lim.stats() == {
            "admitted": 1,
            "rejected_requests": 1,
            "rejected_tokens": 1,
            "rejected_concurrency": 1,
            "backend_errors": 0,
            "fail_open_admissions": 0,
        }

    run(go)


def test_idle_keys_are_forgotten() -> None:
    async def go() -> None:
        lim, clock = limiter()
        spec = LimitSpec(rpm=60, tpm=6000)
        for i in range(5000):
            await lim.settle(await lim.admit(f"k{i}", spec, 1, 1), 1, 1)
        clock.now += 61
        for _ in range(5000):
            await lim.settle(await lim.admit("hot", LimitSpec(concurrency=1), 1, 1), 1, 1)
        assert len(lim._rpm_tat) == 0 and len(lim._tpm_tat) == 0 and lim._inflight == {}

    run(go)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(rpm=7)  # 8.571... s per request
        for _ in range(7):
            await lim.admit("k", spec, 0, None)
        refused = await try_admit(lim, spec)
        assert isinstance(refused, RateLimited)
        assert refused.headers["Retry-After"] == str(math.ceil(60 / 7))

    run(go)


def test_make_limiter_redis_is_shared_whatever_the_worker_count() -> None:
    from workjet_fast.pipeline.limits_redis import RedisLimiter

    async def go() -> None:
        lim = make_limiter(LimitsConfig(backend="redis"), workers=8)  # connects lazily: no server needed here
        assert isinstance(lim, RedisLimiter)
        await lim.aclose()

    run(go)


@given(
    limit=st.integers(min_value=1, max_value=10**13),
    level=st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
)
def test_remaining_is_never_above_the_limit(limit: int, level: float) -> None:
    from workjet_fast.pipeline.limits import ratelimit_headers

    h = ratelimit_headers(LimitSpec(rpm=limit, tpm=limit), level, level)
    assert 0 <= int(h["x-ratelimit-remaining-requests"]) <= limit
    assert 0 <= int(h["x-ratelimit-remaining-tokens"]) <= limit


# ---- admission on an upper bound of the prompt ------------------------------------------------------------------


class ExactCount:
    """The `exact` callable of `admit`: the prompt's real count, and how often it was asked for."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        return self.tokens


def test_a_bound_that_fits_admits_without_counting_and_settle_charges_the_actual() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(tpm=10_000)
        exact = ExactCount(40)
        a = await lim.admit("k", spec, 300, 100, exact)
        assert exact.calls == 0 and a.reserved == 400  # the bound, reserved until settle
        assert a.headers["x-ratelimit-remaining-tokens"] == "9600"
        await lim.settle(a, 40, 10)
        b = await lim.admit("k", spec, 0, 0)
        assert b.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 50)

    run(go)


def test_a_bound_refused_for_tokens_is_counted_and_decided_on_the_count() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(tpm=1000)
        await lim.admit("k", spec, 850, 0)  # 150 left
        exact = ExactCount(100)
        a = await try_admit(lim, spec, 300, 20, exact=exact)  # the bound (320) does not fit
        assert isinstance(a, Admission) and a.reserved == 120  # the count (120) does
        assert exact.calls == 1 and lim.stats()["rejected_tokens"] == 0
        again = ExactCount(100)
        refused = await try_admit(lim, spec, 300, 20, exact=again)  # 30 left: neither fits
        assert isinstance(refused, RateLimited) and "tokens per minute" in refused.message
        assert refused.headers["Retry-After"] == "6"  # the wait for the count's 120 tokens, not the bound's 320
        assert again.calls == 1
        assert lim.stats()["rejected_tokens"] == 1  # the refused bound is not a second refusal

    run(go)


def test_a_bound_larger_than_the_budget_is_counted_before_refusing() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(tpm=1000)
        exact = ExactCount(900)
        a = await try_admit(lim, spec, 5000, exact=exact)
        assert isinstance(a, Admission) and exact.calls == 1 and a.reserved == 900
        refused = await try_admit(lim, spec, 5000, key="k2", exact=ExactCount(1001))
        assert isinstance(refused, RateLimited) and "Request too large: the prompt has 1001 tokens" in refused.message
        assert lim.stats()["rejected_tokens"] == 1

    run(go)


def test_a_bound_refused_for_requests_alone_is_not_counted() -> None:
    async def go() -> None:
        lim, _ = limiter()
        spec = LimitSpec(rpm=1, tpm=1_000_000)
        await lim.admit("k", spec, 10, 0)
        exact = ExactCount(5)
        refused = await try_admit(lim, spec, 300, exact=exact)
        assert isinstance(refused, RateLimited) and "requests per minute" in refused.message
        assert "tokens" not in refused.message.split(":", 1)[0]
        assert exact.calls == 0
        assert lim.stats()["rejected_requests"] == 1 and lim.stats()["rejected_tokens"] == 0

    run(go)
