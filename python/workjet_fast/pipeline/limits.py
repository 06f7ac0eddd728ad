"""Rate limits: requests per minute, tokens per minute and concurrent requests, per API key.

The request path calls, in this order::

    limiter = make_limiter(settings.limits, settings.server.workers)       # once, at startup
    spec = limiter.spec_for(key.limits, public_id, is_tier)                 # per request, no I/O
    admission = await limiter.admit(key.id, spec, prompt_tokens, max_completion_tokens)  # may raise RateLimited
    # or admit(key.id, spec, bound, max_completion_tokens, exact=count): an upper bound, counted only if refused
    try:
        ...                                                                 # call the provider, stream back
    finally:
        await limiter.settle(admission, prompt_tokens, completion_tokens)   # always, exactly once (idempotent)
    ...
    await limiter.aclose()                                                  # at shutdown

`admission.headers` holds OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limits that
exist (`admission.header_pairs()`: the same as bytes pairs); `RateLimited` carries the same plus ``Retry-After``
(whole seconds, rounded up). `limiter.stats()` gives counters for metrics. The string passed as `key_id` is the
scope of the budget: pass the key id for one budget per key across models (the per-model and per-tier defaults
then decide how much of it a request may use).

Algorithm (docs/limits.md has the long version): rpm and tpm are each a GCRA — the "virtual scheduling" form of a
token bucket of capacity N refilled continuously at N per 60 s. A key may spend a full minute's budget at once, never
more, and then gets N/60 per second; over any window of W seconds at most N * (1 + W/60) pass. It needs one number per
key (the theoretical arrival time), so the Redis backend checks all three limits in one atomic Lua call.

Tokens are reserved at admission: ``prompt_tokens + min(max_completion_tokens, completion_estimate)``
(``completion_estimate`` when the client gave no maximum), capped at the tpm limit; `settle` charges the difference
to the actual usage. A request is admitted only when its reservation fits, so a burst of large prompts overshoots
tpm by at most the misestimate of the completions in flight. A prompt larger than the whole tpm budget is refused
(429 without Retry-After: waiting cannot help). Concurrency is a count of in-flight admissions; `settle` frees the
slot.

Backends: `MemoryLimiter` (this module, one process; < 5 µs per admit + settle) and
`workjet_fast.pipeline.limits_redis.RedisLimiter` (exact across any number of processes and machines).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from workjet_fast._workjet_fast import ratelimit_header_pairs
from workjet_fast.config import ConfigError, Problem
from workjet_fast.config.limits import LimitsConfig, LimitSpec
from workjet_fast.errors import RateLimited

__all__ = [
    "Admission",
    "Limiter",
    "MemoryLimiter",
    "Refused",
    "go_duration",
    "make_limiter",
]

WINDOW = 60.0  # seconds: the bucket refills completely in one window
_SLACK = 1e-6  # seconds of float tolerance, so N requests of 60/N seconds each fit exactly in the window
# Remaining counts absorb float error: Redis keeps times as µs doubles (error < 1/64 µs = limit * 2.6e-10 units).
_EPS = 1e-6


class Admission:
    """One admitted request: what `settle` needs to undo, and the headers to send back (from the bucket levels after
    admission; `None`: no headers, as when no limit is set)."""

    __slots__ = ("key_id", "lease", "levels", "reserved", "settled", "spec")

    def __init__(
        self, key_id: str, spec: LimitSpec, reserved: int, lease: str | None, levels: tuple[float, float] | None
    ) -> None:
        self.key_id = key_id
        self.spec = spec
        self.reserved = reserved  # tokens charged to tpm at admission
        self.lease = lease  # concurrency slot held (a Redis lease id, or the key for the memory backend)
        self.levels = levels  # (rpm, tpm) bucket levels in seconds of the window in use
        self.settled = False

    @property
    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the limits that exist (`ratelimit_headers`)."""
        return {} if self.levels is None else ratelimit_headers(self.spec, *self.levels)

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """`headers` as ASGI (name, value) bytes pairs, built in one Rust call (the request path's form)."""
        if self.levels is None:
            return []
        spec = self.spec
        pairs = ratelimit_header_pairs(spec.rpm, spec.tpm, *self.levels)
        if pairs is None:  # a limit above 2**53: Python's arithmetic, as ratelimit_headers does it
            pairs = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        return pairs


def go_duration(seconds: float) -> str:
    """A duration as Go's `time.Duration.String` prints it, to the millisecond: ``0s``, ``12ms``, ``1.5s``, ``6m0s``."""
    ms = math.ceil(seconds * 1000.0 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, frac = divmod(rem, 1000)
    sec = f"{s}.{frac:03d}".rstrip("0") if frac else str(s)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def ratelimit_headers(spec: LimitSpec, rpm_level: float, tpm_level: float) -> dict[str, str]:
    """OpenAI's headers from the bucket levels (seconds of the window in use, 0 = full budget left)."""
    headers: dict[str, str] = {}
    rpm, tpm = spec.rpm, spec.tpm
    if rpm is not None:
        left = min(rpm, int((WINDOW - rpm_level) * rpm / WINDOW + _EPS + rpm * 2e-9))  # inlined (hot); see _EPS
        headers["x-ratelimit-limit-requests"] = str(rpm)
        headers["x-ratelimit-remaining-requests"] = str(left) if left > 0 else "0"
        headers["x-ratelimit-reset-requests"] = go_duration(rpm_level)
    if tpm is not None:
        left = min(tpm, int((WINDOW - tpm_level) * tpm / WINDOW + _EPS + tpm * 2e-9))
        headers["x-ratelimit-limit-tokens"] = str(tpm)
        headers["x-ratelimit-remaining-tokens"] = str(left) if left > 0 else "0"
        headers["x-ratelimit-reset-tokens"] = go_duration(tpm_level)
    return headers


def reservation(spec: LimitSpec, prompt_tokens: int, max_completion_tokens: int | None, estimate: int) -> int:
    """Tokens charged at admission; raises `RateLimited` when the prompt alone exceeds the tpm budget."""
    if spec.tpm is None:
        return 0
    if prompt_tokens > spec.tpm:
        raise Refused(
            f"Request too large: the prompt has {prompt_tokens} tokens, more than this key's limit of "
            f"{spec.tpm} tokens per minute.",
            ratelimit_headers(spec, 0.0, 0.0),
            2,
        )
    completion = estimate if max_completion_tokens is None else min(max_completion_tokens, estimate)
    return min(max(prompt_tokens, 0) + max(completion, 0), spec.tpm)


class Refused(RateLimited):
    """A refusal by the limits themselves (not a backend outage); `hit` has bit 1 for rpm, 2 for tpm, 4 for
    concurrency."""

    def __init__(self, message: str, headers: dict[str, str], hit: int) -> None:
        super().__init__(message, headers=headers)
        self.hit = hit


def rejection(spec: LimitSpec, hit: int, wait: float, rpm_level: float, tpm_level: float) -> Refused:
    """The 429 for a refused request. `hit` has bit 1 for rpm, 2 for tpm, 4 for concurrency; `wait` is seconds."""
    names, limits = [], []
    if hit & 1:
        names.append("requests per minute")
        limits.append(f"{spec.rpm} requests per minute")
    if hit & 2:
        names.append("tokens per minute")
        limits.append(f"{spec.tpm} tokens per minute")
    if hit & 4:
        names.append("concurrent requests")
        limits.append(f"{spec.concurrency} concurrent requests")
        wait = max(wait, 1.0)  # a slot frees when some request ends; one second is a polite guess
    headers = ratelimit_headers(spec, rpm_level, tpm_level)
    retry = max(1, math.ceil(wait - 1e-6))
    headers["Retry-After"] = str(retry)
    # The text before the colon names the limits only (a bounded set, usable as a metric label).
    return Refused(
        f"Rate limit reached for {' and '.join(names)}: this key allows {', '.join(limits)}. "
        f"Please retry in {retry} s.",
        headers,
        hit,
    )


def _resolve(value: Any, name: str) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limit {name!r} must be a positive integer, or 0/null for no limit, got {value!r}")
    return value


def _merge(base: LimitSpec, over: LimitSpec) -> LimitSpec:
    def pick(mine: int | None, theirs: int | None) -> int | None:
        if mine is None:
            return theirs or None
        return mine or None  # 0: explicitly no limit

    return LimitSpec(
        rpm=pick(over.rpm, base.rpm),
        tpm=pick(over.tpm, base.tpm),
        concurrency=pick(over.concurrency, base.concurrency),
    )


_ABSENT: Any = object()


class Limiter(ABC):
    """The interface the request path uses; see the module docstring for the calls in order."""

    def __init__(self, cfg: LimitsConfig) -> None:
        self.cfg = cfg
        self._estimate = cfg.completion_estimate
        self._default = _merge(LimitSpec(), cfg.default)
        self._tiers = {name: _merge(self._default, s) for name, s in cfg.per_tier.items()}
        self._models = {name: _merge(self._default, s) for name, s in cfg.per_model.items()}
        self._counts = {
            "admitted": 0,
            "rejected_requests": 0,
            "rejected_tokens": 0,
            "rejected_concurrency": 0,
            "backend_errors": 0,
            "fail_open_admissions": 0,
        }

    def spec_for(self, key_limits: Mapping[str, Any], public_id: str, is_tier: bool) -> LimitSpec:
        """The limits for a request: the key's own values, else the tier's or model's, else `default`.

        In `key_limits` (``KeyRecord.limits``) a positive integer sets a limit, ``0`` or ``None`` removes it,
        an absent name inherits; anything else raises `ValueError`.
        """
        base = (self._tiers if is_tier else self._models).get(public_id, self._default)
        if not key_limits:
            return base
        rpm = key_limits.get("rpm", _ABSENT)
        tpm = key_limits.get("tpm", _ABSENT)
        conc = key_limits.get("concurrency", _ABSENT)
        return LimitSpec(
            rpm=base.rpm if rpm is _ABSENT else _resolve(rpm, "rpm"),
            tpm=base.tpm if tpm is _ABSENT else _resolve(tpm, "tpm"),
            concurrency=base.concurrency if conc is _ABSENT else _resolve(conc, "concurrency"),
        )

    async def admit(
        self,
        key_id: str,
        spec: LimitSpec,
        prompt_tokens: int,
        max_completion_tokens: int | None,
        exact: Callable[[], Awaitable[int]] | None = None,
    ) -> Admission:
        """Admit the request (reserving its tokens and a concurrency slot) or raise `errors.RateLimited`.

        With `exact`, `prompt_tokens` is an upper bound of the prompt's tokens and `exact()` counts them: the bound
        is tried first, and the prompt is counted only when the bound is refused for tokens. The outcome is the one
        the exact count alone would give at that instant; only the reservation is larger until `settle`.
        """
        if spec.rpm is None and spec.tpm is None and spec.concurrency is None:
            self._counts["admitted"] += 1
            return Admission(key_id, spec, 0, None, None)
        if exact is not None:
            try:
                return await self._reserve(key_id, spec, prompt_tokens, max_completion_tokens)
            except Refused as e:
                if not e.hit & 2:
                    self._count_rejection(e.hit)
                    raise
            prompt_tokens = await exact()
        try:
            return await self._reserve(key_id, spec, prompt_tokens, max_completion_tokens)
        except Refused as e:
            self._count_rejection(e.hit)
            raise

    async def _reserve(self, key_id: str, spec: LimitSpec, prompt_tokens: int, max_out: int | None) -> Admission:
        return await self._admit(key_id, spec, reservation(spec, prompt_tokens, max_out, self._estimate))

    @abstractmethod
    async def _admit(self, key_id: str, spec: LimitSpec, cost: int) -> Admission:
        """The backend's part of `admit`: some limit is set and `cost` tokens are to be reserved. A refusal raises
        `Refused` (from `rejection`), which `admit` counts."""

    @abstractmethod
    async def settle(self, admission: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        """Charge the actual usage instead of the reservation and free the slot; a second call does nothing."""

    def stats(self) -> dict[str, int]:
        """Counters since start: admitted, rejected_{requests,tokens,concurrency}, backend_errors,
        fail_open_admissions."""
        return dict(self._counts)

    @abstractmethod
    async def aclose(self) -> None:
        """Release the backend's resources."""

    def _count_rejection(self, hit: int) -> None:
        if hit & 1:
            self._counts["rejected_requests"] += 1
        if hit & 2:
            self._counts["rejected_tokens"] += 1
        if hit & 4:
            self._counts["rejected_concurrency"] += 1


class MemoryLimiter(Limiter):
    """Exact within one process; nothing is shared between processes. No awaits inside, so each call is atomic."""

    def __init__(self, cfg: LimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(cfg)
        self._clock = clock
        self._rpm_tat: dict[str, float] = {}  # theoretical arrival time: the bucket is full again at this instant
        self._tpm_tat: dict[str, float] = {}
        self._inflight: dict[str, int] = {}
        self._until_prune = 4096

    async def _admit(self, key_id: str, spec: LimitSpec, cost: int) -> Admission:
        rpm, tpm, conc = spec.rpm, spec.tpm, spec.concurrency
        now = self._clock()
        hit = 0
        wait = 0.0
        r_tat = t_tat = now
        r_new = t_new = now
        if rpm is not None:
            r_tat = max(self._rpm_tat.get(key_id, now), now)
            r_new = r_tat + WINDOW / rpm
            if r_new - now > WINDOW + _SLACK:
                hit, wait = 1, r_new - now - WINDOW
        if tpm is not None:
            t_tat = max(self._tpm_tat.get(key_id, now), now)
            t_new = t_tat + cost * WINDOW / tpm
            if t_new - now > WINDOW + _SLACK:
                hit, wait = hit | 2, max(wait, t_new - now - WINDOW)
        if conc is not None and self._inflight.get(key_id, 0) >= conc:
            hit |= 4
        if hit:
            raise rejection(spec, hit, wait, r_tat - now, t_tat - now)
        if rpm is not None:
            self._rpm_tat[key_id] = r_new
        if tpm is not None:
            self._tpm_tat[key_id] = t_new
        if conc is not None:
            self._inflight[key_id] = self._inflight.get(key_id, 0) + 1
        self._counts["admitted"] += 1
        self._until_prune -= 1
        if self._until_prune <= 0:
            self._prune(now)
        return Admission(key_id, spec, cost, key_id if conc is not None else None, (r_new - now, t_new - now))

    async def settle(self, admission: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
        tpm = admission.spec.tpm
        key_id = admission.key_id
        if tpm is not None:
            delta = prompt_tokens + completion_tokens - admission.reserved
            if delta > 0:
                now = self._clock()
                self._tpm_tat[key_id] = max(self._tpm_tat.get(key_id, now), now) + delta * WINDOW / tpm
            elif delta < 0 and key_id in self._tpm_tat:
                self._tpm_tat[key_id] += delta * WINDOW / tpm
        if admission.lease is not None:
            left = self._inflight.get(key_id, 1) - 1
            if left > 0:
                self._inflight[key_id] = left
            else:
                self._inflight.pop(key_id, None)

    async def aclose(self) -> None:
        self._rpm_tat.clear()
        self._tpm_tat.clear()

    def _prune(self, now: float) -> None:
        """Forget keys whose buckets are full again, so memory follows the active keys, not all keys ever seen."""
        self._until_prune = 4096
        for tats in (self._rpm_tat, self._tpm_tat):
            for key in [k for k, tat in tats.items() if tat <= now]:
                del tats[key]


def make_limiter(cfg: LimitsConfig, workers: int) -> Limiter:
    """The limiter the configuration asks for.

    Raises `ConfigError` for the memory backend with more than one worker process unless
    ``limits.accept_per_process_limits`` is true: each process would then enforce the full limits on its own.
    """
    if cfg.backend == "redis":
        from workjet_fast.pipeline.limits_redis import RedisLimiter

        return RedisLimiter(cfg)
    if workers > 1 and not cfg.accept_per_process_limits:
        raise ConfigError(
            "configuration",
            [
                Problem(
                    "limits.backend",
                    None,
                    f"the memory backend counts per process, so with server.workers = {workers} every limit would "
                    f"be {workers} times too high; use `backend: redis`, or set "
                    "`limits.accept_per_process_limits: true` to accept per-process limits",
                )
            ],
        )
    return MemoryLimiter(cfg)
