"""Coarse deadlines (`workjet_fast.deadlines`): they fire after their delay and at most a tick late, never once
cancelled, and `within` behaves as `asyncio.timeout` does, outside cancellations included."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from workjet_fast.deadlines import TICK, Deadlines, deadlines, within


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return asyncio.run if request.param == "asyncio" else uvloop.run


def test_callbacks_fire_in_order_after_their_delay_and_not_once_cancelled(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = deadlines()
        assert deadlines(loop) is d
        fired: list[tuple[str, float]] = []
        start = loop.time()
        d.add(0.1, lambda: fired.append(("b", loop.time() - start)))
        d.add(0.0, lambda: fired.append(("a", loop.time() - start)))
        gone = d.add(0.05, lambda: fired.append(("never", 0.0)))
        d.cancel(gone)
        d.cancel(gone)  # twice: nothing happens
        assert d.pending() == 2
        await asyncio.sleep(0.1 + 3 * TICK)
        assert [name for name, _ in fired] == ["a", "b"]
        assert fired[1][1] >= 0.1
        assert d.pending() == 0 and not d._armed  # the sweep stops once nothing is left

        # Armed again after going idle; a negative delay is due at the next sweep.
        d.add(-1.0, lambda: fired.append(("c", loop.time() - start)))
        await asyncio.sleep(3 * TICK)
        assert fired[-1][0] == "c"

    run(main())


def test_a_failing_callback_does_not_stop_the_others(run, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[str]:
        d = Deadlines(asyncio.get_running_loop())
        fired: list[str] = []
        d.add(0.0, lambda: 1 / 0)
        d.add(0.0, lambda: fired.append("ok"))
        await asyncio.sleep(3 * TICK)
        return fired

    assert run(main()) == ["ok"]
    assert "a deadline callback failed" in caplog.text


def test_within_times_out_like_asyncio_timeout(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await within(0.05, asyncio.sleep(10))
        assert 0.05 <= loop.time() - start < 0.05 + 10 * TICK
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # our cancellation was withdrawn

        assert await within(5, asyncio.sleep(0, "done")) == "done"
        assert deadlines().pending() == 0

        # Nested: the inner limit fires first and is the inner one's TimeoutError; the outer one keeps running.
        async def inner() -> str:
            try:
                await within(0.03, asyncio.sleep(10))
            except TimeoutError:
                return "inner"
            return "no"

        assert await within(5, inner()) == "inner"

        # An error of the awaitable passes through unchanged.
        async def fails() -> None:
            raise ValueError("x")

        with pytest.raises(ValueError):
            await within(5, fails())

    run(main())


def test_within_leaves_an_outside_cancellation_a_cancellation(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async def waits() -> None:
            await within(0.05, asyncio.sleep(10))

        # Cancelled from outside before the deadline: CancelledError, not TimeoutError.
        t = asyncio.get_running_loop().create_task(waits())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

        # Cancelled from outside after the deadline fired but before the task saw it: still a cancellation.
        async def both() -> None:
            task = asyncio.current_task()
            assert task is not None

            async def cancel_soon() -> None:
                await asyncio.sleep(0.05 + TICK / 2)
                task.cancel()

            async def slow() -> None:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    await asyncio.sleep(3 * TICK)  # the outside cancel arrives while we clean up
                    raise

            helper = asyncio.get_running_loop().create_task(cancel_soon())
            try:
                await within(0.05, slow())
            finally:
                helper.cancel()

        t2 = asyncio.get_running_loop().create_task(both())
        with pytest.raises(asyncio.CancelledError):
            await t2

    run(main())
