"""Handing freed memory back to the system.

A worker's passes allocate and free tens of megabytes each (Arrow tables from the engine, numpy
columns, cells), and three allocators keep what is freed for reuse: glibc in a heap per thread
(``malloc_trim`` gives its free pages back), Arrow in its pool (``release_unused``) and the
embedded engine in its own jemalloc (``NativeIngest.release``). Left alone, a metric worker that
caught up on a day of 10,000 agents held several hundred megabytes of such free memory in its
resident set, on top of its windows, for as long as it ran. Releasing costs milliseconds and
runs without the GIL, so the workers call ``Releaser.maybe`` after their passes and rounds, at
most once per ``every_s``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

import pyarrow as pa

logger = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, None on a C library without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))  # CDLL: the call releases the GIL
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()


def release() -> None:
    """Give glibc's and Arrow's free memory back to the system."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


class Releaser:
    """``release``, and ``native`` (an engine's own release: False when it could not run
    now), at most once per ``every_s`` (0: never)."""

    def __init__(self, every_s: float = 1.0, native: Callable[[], bool] | None = None) -> None:
        self.every_s = every_s
        self.native = native
        self._last = self._last_native = time.monotonic()

    def maybe(self) -> None:
        if not self.every_s:
            return
        now = time.monotonic()
        if self.native is not None and now - self._last_native >= self.every_s and self.native():
            self._last_native = now
        if now - self._last >= self.every_s:
            release()
            self._last = time.monotonic()
            logger.debug("released free memory in %.1f ms", (self._last - now) * 1e3)
