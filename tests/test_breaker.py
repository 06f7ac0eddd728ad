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
