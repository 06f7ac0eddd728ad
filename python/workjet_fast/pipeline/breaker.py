"""Circuit breakers, one per deployment, shared by every request in the process.

```text
   N consecutive failures, or
   failure ratio >= R over the window       cooldown elapsed
  closed ───────────────────────────▶ open ──────────────────────────▶ half_open
     ▲                                 ▲                                   │
     │            probe succeeded      │        probe failed               │ one probe at a time
     └─────────────────────────────────┼───────────────────────────────────┤
                                       └───────────────────────────────────┘
```

Two triggers open a closed circuit: `failure_threshold` consecutive failures, and (when `error_ratio` is set)
a failure ratio of at least `error_ratio` over the last `window` calls, judged only once at least `min_calls`
of them are in the window. The ratio catches a deployment that fails often but not in a row (every other
call), which the consecutive count never sees. The window restarts whenever the circuit opens or closes, so a
recovered deployment is not judged by calls made before its outage.

An open circuit is skipped without waiting (the router records it as `circuit_open`, counted as unreachable).
In half-open exactly one request probes the deployment; the others skip it as if it were still open. A probe
that never reports (its request was cancelled) is forgotten after another cooldown, so a breaker cannot stick.

The clock is injectable so tests drive time instead of sleeping.
"""

from __future__ import annotations

import functools
import time
from collections import deque
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
        "_window",
        "_window_failures",
        "consecutive_failures",
        "cooldown",
        "error_ratio",
        "failure_threshold",
        "last_error",
        "min_calls",
        "opened_at",
        "state",
        "total_failures",
        "total_successes",
    )

    def __init__(
        self,
        failure_threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        error_ratio: float | None = None,
        window: int = 20,
        min_calls: int = 10,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self.error_ratio = error_ratio
        self.min_calls = min_calls
        self._window: deque[bool] = deque(maxlen=window)  # True = failure; the last `window` verdicts
        self._window_failures = 0
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
        if self.state != CLOSED:
            self._clear_window()
        else:
            self._record(False)
        self.state = CLOSED
        self.opened_at = None
        self._probe_since = None

    def failure(self, error: str | None = None) -> None:
        self.total_failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        if self.state == CLOSED:
            self._record(True)
        if self.state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold or self._ratio_tripped():
            self.state = OPEN
            self.opened_at = self._clock()
            self._probe_since = None
            self._clear_window()

    def _record(self, failed: bool) -> None:
        if self.error_ratio is None:
            return
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        self._window_failures += failed

    def _ratio_tripped(self) -> bool:
        n = len(self._window)
        return self.error_ratio is not None and n >= self.min_calls and self._window_failures >= self.error_ratio * n

    def _clear_window(self) -> None:
        self._window.clear()
        self._window_failures = 0

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
            "window_failure_ratio": round(self._window_failures / len(self._window), 3) if self._window else None,
            "failures": self.total_failures,
            "successes": self.total_successes,
            "retry_in_s": retry_in,
            "last_error": self.last_error,
        }


class BreakerBoard:
    """Every deployment's breaker, by label (`provider/model`), created on first use with the same settings
    (the arguments are `Breaker`'s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._make = functools.partial(Breaker, *args, **kwargs)
        self._breakers: dict[str, Breaker] = {}

    def get(self, label: str) -> Breaker:
        b = self._breakers.get(label)
        if b is None:
            b = self._breakers[label] = self._make()
        return b

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {label: b.snapshot() for label, b in sorted(self._breakers.items())}
