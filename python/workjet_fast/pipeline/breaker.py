"""Circuit breakers, one per deployment, shared by every request in the process.

```text
            N consecutive failures                 cooldown elapsed
  closed ───────────────────────────▶ open ──────────────────────────▶ half_open
     ▲                                 ▲                                   │
     │            probe succeeded      │        probe failed               │ one probe at a time
     └─────────────────────────────────┼───────────────────────────────────┤
                                       └───────────────────────────────────┘
```

An open circuit is skipped without waiting (the router records it as `circuit_open`, counted as unreachable).
In half-open exactly one request probes the deployment; the others skip it as if it were still open. A probe
that never reports (its request was cancelled) is forgotten after another cooldown, so a breaker cannot stick.

The clock is injectable so tests drive time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Breaker", "BreakerBoard"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class Breaker:
    """The state of one deployment's circuit."""

    __slots__ = (
        "_clock",
        "_probe_since",
        "consecutive_failures",
        "cooldown",
        "failure_threshold",
        "last_error",
        "opened_at",
        "state",
        "total_failures",
        "total_successes",
    )

    def __init__(self, failure_threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._probe_since: float | None = None
        self.last_error: str | None = None
        self.total_failures = 0
        self.total_successes = 0

    def allow(self) -> bool:
        """May a request try this deployment now? In half-open, a True answer makes the caller the probe,
        and it must report `success()`, `failure()` or `release()`."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if self.opened_at is not None and now - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self._probe_since = now
            return True
        # half-open: one probe in flight; a probe silent for a whole cooldown is presumed lost
        if self._probe_since is not None and now - self._probe_since < self.cooldown:
            return False
        self._probe_since = now
        return True

    def success(self) -> None:
        self.total_successes += 1
        self.consecutive_failures = 0
        self.state = CLOSED
        self.opened_at = None
        self._probe_since = None

    def failure(self, error: str | None = None) -> None:
        self.total_failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        if self.state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.state = OPEN
            self.opened_at = self._clock()
            self._probe_since = None

    def release(self) -> None:
        """The attempt ended without a verdict on the deployment (cancelled, or the request itself was at
        fault): a half-open probe slot is freed, nothing else changes."""
        if self.state == HALF_OPEN:
            self._probe_since = None

    def snapshot(self) -> dict[str, Any]:
        retry_in = None
        if self.state == OPEN and self.opened_at is not None:
            retry_in = round(max(0.0, self.cooldown - (self._clock() - self.opened_at)), 3)
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "failures": self.total_failures,
            "successes": self.total_successes,
            "retry_in_s": retry_in,
            "last_error": self.last_error,
        }


class BreakerBoard:
    """Every deployment's breaker, by label (`provider/model`), created on first use."""

    def __init__(self, failure_threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}

    def get(self, label: str) -> Breaker:
        b = self._breakers.get(label)
        if b is None:
            b = self._breakers[label] = Breaker(self.failure_threshold, self.cooldown, self._clock)
        return b

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {label: b.snapshot() for label, b in sorted(self._breakers.items())}
