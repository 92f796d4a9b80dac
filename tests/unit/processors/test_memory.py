"""Handing freed memory back: the release runs at most once per interval and only after work,
an engine busy with a pass is asked again at the next call rather than waited for, and a
release that fails never reaches the caller."""

from __future__ import annotations

import threading

import pytest

from fleetpulse.contract.clock import ManualClock
from fleetpulse.processors import memory
from fleetpulse.processors.ingest import NativeIngest


class _Engine:
    """An engine's release that can refuse (a pass is running) or fail, counting its calls."""

    def __init__(self) -> None:
        self.busy = False
        self.broken = False
        self.calls = 0
        self.released = 0

    def release(self) -> bool:
        self.calls += 1
        if self.broken:
            raise RuntimeError("SYSTEM JEMALLOC PURGE: not supported")
        if self.busy:
            return False
        self.released += 1
        return True


def test_release_runs_at_most_once_per_interval_and_retries_a_busy_engine() -> None:
    clock, engine = ManualClock(), _Engine()
    r = memory.Releaser(every_s=1.0, native=engine.release, clock=clock)
    r.maybe()
    assert engine.calls == 0  # not yet due
    clock.advance(s=1)
    engine.busy = True
    r.maybe()
    r.maybe()  # refused: asked again at the next call, not an interval later
    assert (engine.calls, engine.released) == (2, 0)
    engine.busy = False
    r.maybe()
    r.maybe()  # released: not again within the interval
    assert (engine.calls, engine.released) == (3, 1)


def test_an_idle_worker_releases_once_after_its_last_work_then_rests() -> None:
    clock, engine = ManualClock(), _Engine()
    r = memory.Releaser(every_s=1.0, native=engine.release, clock=clock)
    r.maybe(worked=True)
    clock.advance(s=1)
    r.maybe(worked=False)  # the work before still owes its release
    assert engine.released == 1
    for _ in range(5):
        clock.advance(s=1)
        r.maybe(worked=False)
    assert engine.released == 1


def test_zero_never_releases() -> None:
    clock, engine = ManualClock(), _Engine()
    r = memory.Releaser(every_s=0, native=engine.release, clock=clock)
    clock.advance(s=10)
    r.maybe()
    assert engine.calls == 0


def test_an_engine_that_cannot_release_is_logged_and_not_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, engine = ManualClock(), _Engine()
    engine.broken = True
    r = memory.Releaser(every_s=1.0, native=engine.release, clock=clock)
    for _ in range(3):
        clock.advance(s=1)
        r.maybe()  # never raises
    assert engine.calls == 1
    assert "cannot release" in caplog.text


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
