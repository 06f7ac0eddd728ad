"""Circuit breaker state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from workjet_fast.pipeline.breaker import Breaker, BreakerBoard


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_n_consecutive_failures() -> None:
    clock = Clock()
    b = Breaker(3, 10.0, clock)
    for _ in range(2):
        b.failure("boom")
        assert b.allow()
    b.failure("boom")
    assert b.state == "open"
    assert not b.allow()
    assert b.snapshot()["last_error"] == "boom"
    assert b.snapshot()["retry_in_s"] == 10.0


def test_a_success_resets_the_count() -> None:
    b = Breaker(2, 10.0, Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    b = Breaker(1, 10.0, clock)
    b.failure()
    clock.t += 9.9
    assert not b.allow()
    clock.t += 0.2
    assert b.allow()  # this caller is the probe
    assert b.state == "half_open"
    assert not b.allow()  # everyone else still skips
    b.success()
    assert b.state == "closed"
    assert b.allow()


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = Breaker(5, 10.0, clock)
    for _ in range(5):
        b.failure()
    clock.t += 10
    assert b.allow()
    b.failure()  # one failure in half-open is enough
    assert b.state == "open"
    clock.t += 5
    assert not b.allow()


def test_released_probe_frees_the_slot() -> None:
    clock = Clock()
    b = Breaker(1, 10.0, clock)
    b.failure()
    clock.t += 10
    assert b.allow()
    b.release()
    assert b.allow()


def test_a_lost_probe_is_forgotten_after_a_cooldown() -> None:
    clock = Clock()
    b = Breaker(1, 10.0, clock)
    b.failure()
    clock.t += 10
    assert b.allow()  # the probe never reports back
    clock.t += 5
    assert not b.allow()
    clock.t += 5
    assert b.allow()


def test_board_shares_one_breaker_per_label() -> None:
    board = BreakerBoard(1, 5.0, Clock())
    board.get("a/x").failure("down")
    assert board.get("a/x") is board.get("a/x")
    assert board.snapshot()["a/x"]["state"] == "open"
    assert board.get("b/y").allow()


@given(st.lists(st.sampled_from(["ok", "fail", "tick", "allow"]), max_size=60), st.integers(1, 4))
def test_never_open_with_fewer_consecutive_failures_than_the_threshold(ops: list[str], n: int) -> None:
    clock = Clock()
    b = Breaker(n, 10.0, clock)
    streak = 0
    for op in ops:
        if op == "ok":
            b.success()
            streak = 0
        elif op == "fail":
            b.failure()
            streak += 1
        elif op == "tick":
            clock.t += 6
        else:
            b.allow()
        if b.state == "open":
            assert streak >= 1
        if streak == 0:
            assert b.state == "closed"
        if b.state == "closed":
            assert streak < n


# ---- error-ratio trigger -----------------------------------------------------------------------------------------


def _ratio_breaker(clock: Clock, ratio: float = 0.5, window: int = 10, min_calls: int = 6) -> Breaker:
    # a consecutive threshold no test reaches, so only the ratio can open the circuit
    return Breaker(100, 10.0, clock, error_ratio=ratio, window=window, min_calls=min_calls)


def test_ratio_opens_on_alternating_failures_that_never_form_a_streak() -> None:
    b = _ratio_breaker(Clock())
    for _ in range(2):
        b.failure("boom")
        b.success()
    assert b.state == "closed"  # 2 of 4: below min_calls, no verdict yet
    b.failure("boom")
    assert b.state == "closed"  # 3 of 5: still below min_calls
    b.success()
    assert b.state == "closed"  # 3 of 6 = 0.5 reached, but a success never opens
    b.failure("boom")
    assert b.state == "open"  # 4 of 7 >= 0.5
    assert b.consecutive_failures == 1
    assert not b.allow()


def test_ratio_below_the_threshold_stays_closed() -> None:
    b = _ratio_breaker(Clock(), ratio=0.5, window=10, min_calls=4)
    for _ in range(50):  # 1 failure in 3 calls, forever
        b.success()
        b.success()
        b.failure()
        assert b.state == "closed"
    assert b.snapshot()["window_failure_ratio"] == 0.4  # the last 10: f s s f s s f s s f


def test_ratio_only_counts_the_last_window_calls() -> None:
    b = _ratio_breaker(Clock(), ratio=0.5, window=4, min_calls=4)
    b.failure()
    b.failure()
    b.success()
    b.success()
    b.success()  # the window is now [fail, ok, ok, ok]: the first failure slid out
    b.failure()  # [ok, ok, ok, fail] = 0.25
    assert b.state == "closed"
    b.failure()  # [ok, ok, fail, fail] = 0.5
    assert b.state == "open"


def test_ratio_window_restarts_after_recovery() -> None:
    clock = Clock()
    b = _ratio_breaker(clock, ratio=0.5, window=10, min_calls=4)
    for _ in range(4):
        b.failure()
    assert b.state == "open"
    clock.t += 10
    assert b.allow()
    b.success()  # the probe closes the circuit; the outage's failures are forgotten
    assert b.state == "closed"
    assert b.snapshot()["window_failure_ratio"] is None
    b.failure()
    b.success()
    b.success()
    assert b.state == "closed"  # 1 of 3: nothing from before the outage counts


def test_ratio_off_by_default_and_release_is_no_verdict() -> None:
    b = Breaker(100, 10.0, Clock())
    for _ in range(30):
        b.failure()
        b.success()
    assert b.state == "closed" and b.snapshot()["window_failure_ratio"] is None
    r = _ratio_breaker(Clock(), ratio=0.5, window=4, min_calls=2)
    r.failure()
    for _ in range(5):
        r.release()  # a request fault: says nothing about the deployment
    assert r.state == "closed" and r.snapshot()["window_failure_ratio"] == 1.0


def test_board_passes_the_ratio_settings_on() -> None:
    board = BreakerBoard(100, 5.0, Clock(), error_ratio=0.5, window=4, min_calls=2)
    b = board.get("a/x")
    b.success()
    b.failure()
    assert b.state == "open"


@given(st.lists(st.booleans(), max_size=80), st.floats(0.1, 1.0), st.integers(1, 12), st.integers(1, 12))
def test_ratio_opens_exactly_when_the_window_says_so(
    outcomes: list[bool], ratio: float, window: int, min_calls: int
) -> None:
    """A reference model: the breaker (closed, consecutive trigger out of reach) opens on the first failure
    after which the last `window` outcomes hold at least `min_calls` calls and a failure ratio >= `ratio`."""
    min_calls = min(min_calls, window)
    b = Breaker(10_000, 10.0, Clock(), error_ratio=ratio, window=window, min_calls=min_calls)
    seen: list[bool] = []
    for failed in outcomes:
        if failed:
            b.failure()
        else:
            b.success()
        seen.append(failed)
        last = seen[-window:]
        expect_open = failed and len(last) >= min_calls and sum(last) >= ratio * len(last)
        assert (b.state == "open") == expect_open
        if expect_open:
            return
