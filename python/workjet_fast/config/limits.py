"""The `limits:` section: per-key request, token and concurrency limits (owned by the rate-limit feature).

```yaml
limits:
  backend: redis                  # memory (default, one process) | redis (exact across processes and replicas)
  redis_url: redis://127.0.0.1:6379/0
  fail_mode: closed               # Redis unreachable: closed -> 429 + Retry-After: 1, open -> admit unchecked
  completion_estimate: 512        # tokens reserved for the completion: min(max_tokens, this)
  default: {rpm: 600, tpm: 200000, concurrency: 20}
  tiers:
    premium: {rpm: 3000, tpm: 1000000}
  models:
    gpt-4o: {tpm: 100000, concurrency: 0}   # 0: no limit here, even if `default` has one
```

A field left out of a tier or model entry inherits it from `default`; `0` removes the limit.
Per-key values (`KeyRecord.limits`) override both; see `workjet_fast.pipeline.limits.Limiter.spec_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workjet_fast.config._reader import Section

__all__ = ["LimitSpec", "LimitsConfig", "read_limits", "read_spec"]


@dataclass(frozen=True)
class LimitSpec:
    """Limits for one request. `None` means no limit; in a tier or model entry of the configuration `None`
    means "inherit from `default`" and `0` means "no limit" (the limiter resolves both to `None`)."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + completion)
    concurrency: int | None = None  # in-flight requests


@dataclass(frozen=True)
class LimitsConfig:
    backend: str = "memory"  # memory | redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    fail_mode: str = "closed"  # on backend outage: open (admit) | closed (429 with Retry-After: 1)
    accept_per_process_limits: bool = False  # memory backend with server.workers > 1: each process counts alone
    default: LimitSpec = field(default_factory=LimitSpec)
    per_tier: dict[str, LimitSpec] = field(default_factory=dict)
    per_model: dict[str, LimitSpec] = field(default_factory=dict)
    completion_estimate: int = 512  # completion tokens reserved at admission: min(max_tokens, this)
    redis_prefix: str = "workjet:rl:"  # every Redis key the limiter writes starts with this
    redis_timeout: float = 0.25  # seconds, connect and per command; then the fail mode applies
    lease_seconds: float = 30.0  # a dead process's concurrency slots are freed after at most this long


def read_spec(s: Section) -> LimitSpec:
    spec = LimitSpec(
        rpm=s.int("rpm", None, min=0),
        tpm=s.int("tpm", None, min=0),
        concurrency=s.int("concurrency", None, min=0),
    )
    s.finish()
    return spec


def read_limits(s: Section, known_ids: set[str]) -> LimitsConfig:
    per_tier: dict[str, LimitSpec] = {}
    per_model: dict[str, LimitSpec] = {}
    for name, sub in s.items("tiers"):
        if name not in known_ids:
            sub.problem(None, f"names no tier: {name!r}")
        per_tier[name] = read_spec(sub)
    for name, sub in s.items("models"):
        if name not in known_ids:
            sub.problem(None, f"names no model: {name!r}")
        per_model[name] = read_spec(sub)
    redis_url = s.str("redis_url", "redis://127.0.0.1:6379/0")
    if isinstance(redis_url, str) and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        s.problem("redis_url", "must start with redis://, rediss:// or unix://")
    lease_seconds = s.float("lease_seconds", 30.0, positive=True)
    if lease_seconds < 3:
        s.problem("lease_seconds", "must be at least 3 (leases are renewed every third of it)")
    cfg = LimitsConfig(
        backend=s.str("backend", "memory", choices=("memory", "redis")),
        redis_url=redis_url,
        fail_mode=s.str("fail_mode", "closed", choices=("open", "closed")),
        accept_per_process_limits=s.bool("accept_per_process_limits", False),
        default=read_spec(s.section("default")),
        per_tier=per_tier,
        per_model=per_model,
        completion_estimate=s.int("completion_estimate", 512, min=0),
        redis_prefix=s.str("redis_prefix", "workjet:rl:"),
        redis_timeout=s.float("redis_timeout", 0.25, positive=True),
        lease_seconds=lease_seconds,
    )
    s.finish()
    return cfg
