"""Returning the C heap's free pages to the OS (glibc's `malloc_trim`), after the work that leaves them behind."""

from __future__ import annotations

import ctypes

__all__ = ["release_free_heap"]


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS, in every malloc arena.

    The gateway calls it once start-up is done: building the token encoder (in a thread, so in another arena) and
    the DLP database frees ~10 MB of temporaries that glibc otherwise keeps mapped for later allocations. The
    handler calls it after counting a prompt of a million characters or more, whose merge scratch (~20 bytes per
    byte of one long word) would otherwise stay resident in the counting thread's arena. Elsewhere (musl, macOS)
    there is no `malloc_trim` and nothing is done."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
