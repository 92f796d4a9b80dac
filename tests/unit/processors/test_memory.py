"""Handing freed memory back: the release runs at most once per interval, and an engine busy
with a pass is asked again later rather than waited for."""

from __future__ import annotations

import threading
import time

from fleetpulse.processors import memory
from fleetpulse.processors.ingest import NativeIngest


class _Engine:
    """An engine's release that can refuse (a pass is running), counting its calls."""

    def __init__(self) -> None:
        self.busy = False
        self.calls = 0
        self.released = 0

    def release(self) -> bool:
        self.calls += 1
        if self.busy:
            return False
        self.released += 1
        return True


def test_release_runs_at_most_once_per_interval_and_retries_a_busy_engine() -> None:
    engine = _Engine()
    r = memory.Releaser(every_s=0.05, native=engine.release)
    r.maybe()
    assert engine.calls == 0  # not yet due
    time.sleep(0.06)
    engine.busy = True
    r.maybe()
    r.maybe()  # refused: asked again at once, not an interval later
    assert (engine.calls, engine.released) == (2, 0)
    engine.busy = False
    r.maybe()
    r.maybe()  # released: not again within the interval
    assert (engine.calls, engine.released) == (3, 1)


def test_zero_never_releases() -> None:
    engine = _Engine()
    r = memory.Releaser(every_s=0, native=engine.release)
    time.sleep(0.01)
    r.maybe()
    assert engine.calls == 0


def test_the_engine_releases_between_passes_and_not_during_one() -> None:
    n = NativeIngest(native_min=0)
    try:
        n.warm()
        assert n.release()
        with n._lock:  # a pass holds the session
            got: list[bool] = []
            t = threading.Thread(target=lambda: got.append(n.release()))
            t.start()
            t.join(5)
        assert got == [False]
        memory.release()  # glibc and Arrow: no engine needed
    finally:
        n.close()
