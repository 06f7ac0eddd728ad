"""The heap trim (`heap.release_free_heap`): freed C-heap pages go back to the OS."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from workjet_fast import heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_pages_are_returned() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim") or not Path("/proc/self/status").exists():
        pytest.skip("not glibc on Linux: there is no malloc_trim and the gateway does nothing")
    if os.environ.get("LD_PRELOAD"):
        pytest.skip("LD_PRELOAD may replace glibc's allocator, whose free pages malloc_trim returns")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 24 MB of 1-KiB blocks straight from malloc (below the mmap threshold), each touched, then all freed but
    # the last: it pins the top of the heap, so free() alone cannot give the pages back.
    blocks = [libc.malloc(1024) for _ in range(24 * 1024)]
    assert all(blocks)
    for p in blocks:
        ctypes.memset(p, 1, 1024)
    for p in blocks[:-1]:
        libc.free(p)
    try:
        before = _rss_mb()
        heap.release_free_heap()
        after = _rss_mb()
        assert before - after > 10, (before, after)
    finally:
        libc.free(blocks[-1])


def test_nothing_happens_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:
        pass

    monkeypatch.setattr("workjet_fast.heap.ctypes.CDLL", lambda _name: NoTrim())
    heap.release_free_heap()  # no AttributeError escapes: musl and macOS have no malloc_trim
