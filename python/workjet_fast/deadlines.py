"""Coarse timeouts for the request path: one event-loop timer per loop, however many waits are timed.

Every upstream call waits under two time limits (the routing's total budget, the client's time to the response
head) and every body read under a third. As asyncio timers they cost, warm under uvloop, ~5 µs for an
`asyncio.timeout` and ~2.5 µs for a `call_later` and its cancel: most of it making and unmaking a libuv timer.
Here a deadline is an entry in a dict of `TICK`-wide slots, and one timer sweeps the slots that are due while any
entry is left (~1 µs per timed wait). The price is precision: a deadline fires between 0 and `TICK` seconds
late, which for limits of seconds to minutes does not matter.

`within(seconds, aw)` is `asyncio.timeout` for one awaitable (TimeoutError when it runs out; a cancellation
from elsewhere stays a cancellation); `deadlines()` gives the loop's `Deadlines` for plain callbacks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["TICK", "Deadlines", "Key", "deadlines", "within"]

T = TypeVar("T")

TICK = 0.02  # seconds: the width of a slot, and how late a deadline may fire

log = logging.getLogger("workjet.deadlines")

Key = tuple[int, int]  # (slot, entry id)


class Deadlines:
    """Callbacks to run once their delay has passed, on one event loop; `cancel` before then and they never run."""

    __slots__ = ("_armed", "_cursor", "_ids", "_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, dict[int, Callable[[], object]]] = {}  # slot -> entries due when it is swept
        self._cursor = 0  # the first slot not yet swept
        self._armed = False  # a sweep is scheduled
        self._ids = itertools.count()

    def add(self, delay: float, callback: Callable[[], object]) -> Key:
        """Run `callback` on the loop once `delay` seconds have passed (up to `TICK` later)."""
        now = self._loop.time()
        if not self._armed:
            self._armed = True
            self._cursor = math.floor(now / TICK)
            self._loop.call_later(TICK, self._sweep)
        # The first slot that starts at or after the deadline, and never one already swept.
        slot = max(math.ceil((now + max(delay, 0.0)) / TICK), self._cursor)
        entry = next(self._ids)
        due = self._slots.get(slot)
        if due is None:
            self._slots[slot] = {entry: callback}
        else:
            due[entry] = callback
        return slot, entry

    def cancel(self, key: Key) -> None:
        """Forget the callback of `key` (nothing happens if it ran or was cancelled already)."""
        slot, entry = key
        due = self._slots.get(slot)
        if due is not None:
            due.pop(entry, None)
            if not due:
                del self._slots[slot]

    def pending(self) -> int:
        return sum(len(d) for d in self._slots.values())

    def _sweep(self) -> None:
        now = math.floor(self._loop.time() / TICK)  # slots up to here start at or before now: they are due
        slots = self._slots
        for slot in range(self._cursor, now + 1):
            due = slots.pop(slot, None)
            if due is not None:
                for callback in due.values():
                    try:
                        callback()
                    except Exception:  # one failing callback must not cost the others their deadline
                        log.exception("a deadline callback failed")
        self._cursor = max(self._cursor, now + 1)
        if slots:
            self._loop.call_later(TICK, self._sweep)
        else:
            self._armed = False


_current: tuple[asyncio.AbstractEventLoop, Deadlines] | None = None


def deadlines(loop: asyncio.AbstractEventLoop | None = None) -> Deadlines:
    """The `Deadlines` of `loop` (default: the running loop)."""
    global _current
    if loop is None:
        loop = asyncio.get_running_loop()
    current = _current
    if current is not None and current[0] is loop:
        return current[1]
    # One loop per process is the case that matters; another loop (tests) gets its own, and the last one is kept.
    d = Deadlines(loop)
    _current = (loop, d)
    return d


async def within(seconds: float, aw: Awaitable[T]) -> T:
    """`await aw`, cancelled after `seconds` (up to `TICK` later) with `TimeoutError` raised instead, as
    `asyncio.timeout` does: when the task was also cancelled from elsewhere, the cancellation wins."""
    if sys.version_info < (3, 11):  # pragma: no cover - no Task.cancelling() before 3.11
        return await asyncio.wait_for(aw, seconds)
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must be awaited in a task")
    expired = [False]

    def expire() -> None:
        expired[0] = True
        task.cancel()

    d = deadlines(task.get_loop())
    cancelling = task.cancelling()
    key = d.add(seconds, expire)
    try:
        result = await aw
    except asyncio.CancelledError as e:
        if expired[0] and task.uncancel() <= cancelling:
            raise TimeoutError from e
        raise
    except BaseException:
        if expired[0]:
            task.uncancel()
        raise
    finally:
        d.cancel(key)
    if expired[0]:  # it ran out, but the awaitable finished anyway: withdraw our cancellation
        task.uncancel()
    return result
