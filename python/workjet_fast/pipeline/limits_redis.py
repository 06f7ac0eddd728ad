"""The Redis backend of the rate limiter: exact across any number of gateway processes and machines.

One round trip per admission: `EVALSHA` of `ADMIT_LUA`, which reads the clock with Redis `TIME` (one clock for
every machine), checks rpm, tpm and concurrency, and records all three only if all pass. One round trip per
settlement (`SETTLE_LUA`), none when there is nothing to correct or release.

Keys, all under ``limits.redis_prefix`` with the scope in a hash tag (one cluster slot per key)::

    <prefix>{<key_id>}:r   rpm bucket: theoretical arrival time in µs (string), expires when the bucket is full
    <prefix>{<key_id>}:t   tpm bucket: same
    <prefix>{<key_id>}:c   concurrency: sorted set of leases, member = lease id, score = expiry in µs

A lease lives ``limits.lease_seconds``; each process renews the leases of its in-flight requests every third of
that, so a long stream keeps its slot and the slots of a process that died are free again within
``lease_seconds``. Expired leases are dropped by the next admission for the key.

When Redis cannot be reached (or answers with an error) `fail_mode` decides: ``closed`` refuses with 429 and
``Retry-After: 1``, ``open`` admits without checking. Either way `stats()["backend_errors"]` counts it and a warning
is logged at most every 10 s. The client reconnects on the next call: there is no state to rebuild, and a restarted
Redis gets the scripts again from redis-py's NOSCRIPT fallback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from workjet_fast.config.limits import LimitsConfig, LimitSpec
from workjet_fast.errors import RateLimited
from workjet_fast.pipeline.limits import Admission, Limiter, rejection

__all__ = ["ADMIT_LUA", "SETTLE_LUA", "RedisLimiter"]

log = logging.getLogger("workjet.limits")

_NOW = """
local now
if ARGV[NOW_ARG] == '' then
  -- µs since 2023-11-14 (1.7e9 s): smaller numbers keep doubles precise to 1/64 µs for centuries
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - 1700000000) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[NOW_ARG])
end
"""

ADMIT_LUA = (
    """
-- KEYS: rpm bucket, tpm bucket, concurrency leases
-- ARGV: rpm, tpm, concurrency (0 = no limit), tokens to reserve, lease id, lease ttl (µs), now (µs, '' = TIME)
-- returns {hit bits (1 rpm, 2 tpm, 4 concurrency), wait µs, rpm level µs, tpm level µs}, the last three as
-- strings: a number in a Lua reply would be truncated to an integer
local W = 60000000
local function f(x) return string.format('%.17g', x) end
"""
    + _NOW.replace("NOW_ARG", "7")
    + """
local rpm, tpm, conc, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local hit, wait = 0, 0
local r_tat, t_tat, r_new, t_new = now, now, now, now
if rpm > 0 then
  r_tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
  r_new = r_tat + W / rpm
  if r_new - now > W + 1 then hit = 1; wait = r_new - now - W end
end
if tpm > 0 then
  t_tat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now)
  t_new = t_tat + cost * W / tpm
  if t_new - now > W + 1 then hit = hit + 2; wait = math.max(wait, t_new - now - W) end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then hit = hit + 4 end
end
if hit > 0 then
  return {hit, f(wait), f(r_tat - now), f(t_tat - now)}
end
if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g', r_new), 'PX', math.ceil((r_new - now) / 1000) + 1000)
end
if tpm > 0 and t_new > now then
  redis.call('SET', KEYS[2], string.format('%.17g', t_new), 'PX', math.ceil((t_new - now) / 1000) + 1000)
end
if conc > 0 then
  local ttl = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl / 1000) + 1000)
end
return {0, '0', f(r_new - now), f(t_new - now)}
"""
)

SETTLE_LUA = (
    """
-- KEYS: tpm bucket, concurrency leases
-- ARGV: tpm (0 = no limit), token correction (actual - reserved), lease id ('' = none), now (µs, '' = TIME)
"""
    + _NOW.replace("NOW_ARG", "4")
    + """
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and delta ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
  if delta > 0 then tat = math.max(tat, now) end
  tat = tat + delta * 60000000 / tpm
  if tat > now then
    redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return 0
"""
)

RENEW_LUA = (
    """
-- KEYS: concurrency leases; ARGV: lease ttl (µs), now (µs, '' = TIME), lease ids...
"""
    + _NOW.replace("NOW_ARG", "2")
    + """
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
return 0
"""
)

_BACKEND_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class _ThrottledLog:
    """One warning per `every` seconds, with the count of the errors it stands for; one info when it recovers."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.down = False
        self._last = -float("inf")
        self._unreported = 0

    def error(self, what: str, exc: BaseException) -> None:
        self.down = True
        self._unreported += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning(
                "rate-limit backend (Redis) failed during %s: %s: %s (%d failures since the last report)",
                what,
                type(exc).__name__,
                exc,
                self._unreported,
            )
            self._last = now
            self._unreported = 0

    def recovered(self) -> None:
        self.down = False
        log.info("rate-limit backend (Redis) reachable again")


class RedisLimiter(Limiter):
    """Limits shared through Redis. `clock_us` replaces Redis `TIME` (microseconds) and exists for tests only."""

    def __init__(
        self, cfg: LimitsConfig, *, clock_us: Callable[[], int] | None = None, client: Redis | None = None
    ) -> None:
        super().__init__(cfg)
        self._redis = client or Redis.from_url(
            cfg.redis_url,
            socket_timeout=cfg.redis_timeout,
            socket_connect_timeout=cfg.redis_timeout,
            retry=Retry(NoBackoff(), 0),  # a retried admission could be counted twice; the fail mode decides
        )
        self._admit_script = self._redis.register_script(ADMIT_LUA)
        self._settle_script = self._redis.register_script(SETTLE_LUA)
        self._renew_script = self._redis.register_script(RENEW_LUA)
        self._prefix = cfg.redis_prefix
        self._fail_open = cfg.fail_mode == "open"
        self._ttl_us = int(cfg.lease_seconds * 1_000_000)
        self._clock_us = clock_us
        self._lease_base = f"{os.getpid()}.{secrets.token_hex(6)}."
        self._seq = itertools.count()
        self._live: dict[str, str] = {}  # lease id -> concurrency key, for renewal
        self._renewer: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._log = _ThrottledLog()

    def _now(self) -> str | int:
        return "" if self._clock_us is None else self._clock_us()

    async def _admit(self, key_id: str, spec: LimitSpec, cost: int) -> Admission:
        rpm, tpm, conc = spec.rpm, spec.tpm, spec.concurrency
        lease = f"{self._lease_base}{next(self._seq)}" if conc is not None else ""
        base = f"{self._prefix}{{{key_id}}}"
        try:
            hit, wait_us, r_us, t_us = await self._admit_script(
                keys=(base + ":r", base + ":t", base + ":c"),
                args=(rpm or 0, tpm or 0, conc or 0, cost, lease, self._ttl_us, self._now()),
            )
            r_level, t_level = float(r_us) / 1e6, float(t_us) / 1e6
        except _BACKEND_ERRORS as e:
            return self._outage(key_id, spec, e)
        if self._log.down:
            self._log.recovered()
        if hit:
            raise rejection(spec, hit, float(wait_us) / 1e6, r_level, t_level)
        self._counts["admitted"] += 1
        if lease:
            self._live[lease] = base + ":c"
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return Admission(key_id, spec, cost, lease or None, (r_level, t_level))

    def _outage(self, key_id: str, spec: LimitSpec, exc: BaseException) -> Admission:
        self._counts["backend_errors"] += 1
        self._log.error("admit", exc)
        if not self._fail_open:
            raise RateLimited(
                "Rate limits cannot be checked right now (the limits backend is unavailable). Please retry later.",
                headers={"Retry-After": "1"},
            )
        self._counts["fail_open_admissions"] += 1
        admission = Admission(key_id, spec, 0, None, None)
        admission.settled = True  # nothing was recorded, so there is nothing to settle
        return admission

    async def settle(self, admission: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
        lease = admission.lease
        if lease is not None:
            self._live.pop(lease, None)
        tpm = admission.spec.tpm or 0
        delta = prompt_tokens + completion_tokens - admission.reserved if tpm else 0
        if not delta and lease is None:
            return
        base = f"{self._prefix}{{{admission.key_id}}}"
        # Shielded: settle runs in the `finally` of a request that may be being cancelled (client gone); the
        # correction and the slot release must still reach Redis.
        task = asyncio.get_running_loop().create_task(self._settle_remote(base, tpm, delta, lease or ""))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _settle_remote(self, base: str, tpm: int, delta: int, lease: str) -> None:
        try:
            await self._settle_script(keys=(base + ":t", base + ":c"), args=(tpm, delta, lease, self._now()))
        except _BACKEND_ERRORS as e:
            self._counts["backend_errors"] += 1
            self._log.error("settle", e)  # the lease expires on its own within lease_seconds

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_seconds / 3)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Push back the expiry of this process's in-flight leases (a background task calls this every third of
        ``lease_seconds``); one round trip per concurrency key in flight."""
        by_key: dict[str, list[str]] = {}
        for lease, key in self._live.items():
            by_key.setdefault(key, []).append(lease)
        for key, leases in by_key.items():
            try:
                await self._renew_script(keys=(key,), args=(self._ttl_us, self._now(), *leases))
            except _BACKEND_ERRORS as e:
                self._counts["backend_errors"] += 1
                self._log.error("lease renewal", e)
                return

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            try:
                await self._renewer
            except asyncio.CancelledError:
                pass
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._redis.aclose()
