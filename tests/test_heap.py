"""The start-up heap trim (`gateway._release_free_heap`): freed C-heap pages go back to the OS."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from workjet_fast import gateway


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_pages_are_returned() -> None:
    if not hasattr(ctypes.CDLL(None), "malloc_trim") or not Path("/proc/self/status").exists():
        pytest.skip("not glibc on Linux: there is no malloc_trim and the gateway does nothing")
    # 24 MB of 1-KiB buffers from malloc (too big for pymalloc, too small for mmap), then all freed but the last:
    # it pins the top of the heap, so free() alone cannot give the pages back.
    blocks = [bytes(1024) + bytes([i % 256]) for i in range(24 * 1024)]
    keep = blocks[-1]
    del blocks
    before = _rss_mb()
    gateway._release_free_heap()
    after = _rss_mb()
    assert before - after > 10, (before, after)
    assert keep[-1] == (24 * 1024 - 1) % 256


def test_nothing_happens_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:
        pass

    monkeypatch.setattr(gateway.ctypes, "CDLL", lambda _name: NoTrim())
    gateway._release_free_heap()  # no AttributeError escapes: musl and macOS have no malloc_trim
