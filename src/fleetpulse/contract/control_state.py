"""The current state of every breaker and pause, as read from ``fleetpulse.control``.

The control topic is compacted and keyed by target: the newest message per key is the state.
Writers stamp a monotonic ``sequence``; a reader keeps, per (kind, target), the message with
the highest sequence it has seen and drops any that is not newer, so a stale message (a
replayed one, or the loser of a race between two writers) never rolls a state back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

ControlRecord = dict[str, Any]
Listener = Callable[[ControlRecord], None]


class ControlView:
    """Thread-safe map of (kind, target_id) to the newest ControlMessage record.

    Example:
        >>> v = ControlView()
        >>> v.apply({"kind": "agent_pause", "target_id": "triage", "state": "PAUSED",
        ...          "sequence": 2})
        True
        >>> v.apply({"kind": "agent_pause", "target_id": "triage", "state": "RUNNING",
        ...          "sequence": 1})
        False
        >>> v.get("agent_pause", "triage")["state"]
        'PAUSED'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], ControlRecord] = {}
        self._listeners: list[Listener] = []
        self._stale_listeners: list[Listener] = []
        self.stale_dropped = 0

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(record)`` (in the applying thread) whenever a state is replaced."""
        self._listeners.append(listener)

    def on_stale(self, listener: Listener) -> None:
        """Call ``listener(record)`` for a record dropped as stale: it arrived after a newer one,
        so after compaction it would be the one left. The owner of the state re-asserts it."""
        self._stale_listeners.append(listener)

    def apply(self, record: ControlRecord) -> bool:
        """Take ``record`` if its sequence is newer than the one held; return whether it was."""
        key = (record["kind"], record["target_id"])
        with self._lock:
            held = self._records.get(key)
            stale = held is not None and record["sequence"] <= held["sequence"]
            if stale:
                self.stale_dropped += 1
            else:
                self._records[key] = record
        if stale:
            for listener in self._stale_listeners:
                listener(record)
            return False
        for listener in self._listeners:
            listener(record)
        return True

    def get(self, kind: str, target_id: str) -> ControlRecord | None:
        with self._lock:
            return self._records.get((kind, target_id))

    def sequence(self, kind: str, target_id: str) -> int:
        held = self.get(kind, target_id)
        return int(held["sequence"]) if held else 0

    def records(self, kind: str | None = None) -> list[ControlRecord]:
        with self._lock:
            return [r for (k, _), r in sorted(self._records.items()) if kind in (None, k)]
