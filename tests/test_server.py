"""Worker process settings applied by `server.app_factory`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from workjet_fast.server import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_workers_collect_the_young_generation_less_often() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700 and gc.isenabled()
