"""Process-wide settings of a long-running server process (processors, sink), applied once at
its start, before any thread or Kafka client exists.

glibc gives each thread that allocates its own malloc arena, up to 8 per core, and an arena
keeps what was freed in it for reuse instead of returning it to the system. A processor runs a
dozen threads (librdkafka's per client and broker, the windows thread, the checkpoint writer,
the engine's), each freeing megabytes of batches, snapshots and checkpoint chunks into an arena
of its own: measured on ``bench/restart.py``, six arenas of ~60 MB each were resident in a
metric worker whose windows held 240 MB. Two arenas bound that waste; the threads rarely
allocate at the same instant, so they seldom wait for one another.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX`` would; an operator's own
    ``MALLOC_ARENA_MAX`` (or ``GLIBC_TUNABLES`` naming ``arena_max``) is left to rule. False
    where nothing was set: another C library than glibc, or the environment decides."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): no arenas to cap
        logger.debug("mallopt is not available here; malloc arenas left as they are")
        return False
