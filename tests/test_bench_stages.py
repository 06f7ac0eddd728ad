"""The stage timer of the load benchmark (benches/load/stages.py): wrappers and the table."""

from __future__ import annotations

import asyncio

import pytest

from benches.load.stages import _timed_async, _timed_sync, render


def test_sync_wrapper_passes_results_and_errors_through_and_counts_both() -> None:
    stats: dict[str, list[float]] = {}
    f = _timed_sync(stats, "f", lambda x: x * 2)
    assert f(21) == 42

    def boom() -> None:
        raise ValueError("no")

    g = _timed_sync(stats, "f", boom)
    with pytest.raises(ValueError):
        g()
    assert stats["f"][1] == 2 and stats["f"][0] > 0


def test_async_wrapper_times_the_awaited_call() -> None:
    stats: dict[str, list[float]] = {}

    async def slow(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    f = _timed_async(stats, "slow", slow)
    assert asyncio.run(f(5)) == 5
    assert stats["slow"][1] == 1 and stats["slow"][0] >= 0.009


def test_table_is_per_request_and_leaves_wall_stages_out_of_the_sum() -> None:
    results = {
        "on": {
            "stages": {"a": [0.002, 100], "(wait)": [1.0, 100]},
            "process_cpu_s": 0.05,
            "writer_cpu_s": 0.001,
            "requests": 100,
            "rps": 1000.0,
        },  # fmt: skip
        "off": {
            "stages": {"a": [0.001, 100]},
            "process_cpu_s": 0.03,
            "writer_cpu_s": 0.0,
            "requests": 100,
            "rps": 2000.0,
        },  # fmt: skip
    }
    table = render(results)
    assert "| a | 20.0 | 10.0 |" in table  # 2 ms over 100 requests
    assert "| (wait) | 10000.0 | – |" in table
    assert "| **process CPU** | 500.0 | 300.0 |" in table
    assert "| stages above, summed (no upstream wait) | 20.0 | 10.0 |" in table
