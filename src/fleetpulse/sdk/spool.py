"""An append-only, on-disk queue for events Kafka could not take.

The SDK writes here when the broker is unreachable beyond the producer's in-memory queue, and
replays from here, in order, when it comes back. Records live in segment files
``spool-<seq>.log``; a segment is deleted only once every record read from it was acknowledged
by Kafka (or re-spooled after a failure), so a crash replays rather than loses.

Frame layout (little-endian)::

    magic u8 = 0xF5 | crc32 u32 | topic_len u16 | key_len u32 (0xFFFFFFFF = no key) | value_len u32
    | topic | key | value            crc32 covers everything after the crc field

A torn frame at the end of a segment (the process died mid-write) is cut off on open.

Only one process may own a spool directory: `Spool.open_instance` takes the first
``inst-<n>`` subdirectory whose lock is free, which also adopts what a dead process left behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

_MAGIC = 0xF5
_HEAD = struct.Struct("<BIHII")  # magic, crc, topic_len, key_len, value_len
_NO_KEY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    topic: str
    key: bytes | None
    value: bytes
    segment: int


def _frame(topic: str, key: bytes | None, value: bytes) -> bytes:
    t = topic.encode()
    key_len = _NO_KEY if key is None else len(key)
    rest = struct.pack("<HII", len(t), key_len, len(value)) + t + (key or b"") + value
    return struct.pack("<BI", _MAGIC, zlib.crc32(rest)) + rest


def _read_frames(path: Path, seg: int) -> Iterator[tuple[int, SpooledRecord]]:
    """Yield (end_offset, record) for every intact frame; stop at the first torn one."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEAD.size <= len(data):
        magic, crc, tlen, klen, vlen = _HEAD.unpack_from(data, pos)
        body_len = tlen + (0 if klen == _NO_KEY else klen) + vlen
        end = pos + _HEAD.size + body_len
        if magic != _MAGIC or end > len(data) or zlib.crc32(data[pos + 5 : end]) != crc:
            return
        p = pos + _HEAD.size
        topic = data[p : p + tlen].decode()
        p += tlen
        key = None
        if klen != _NO_KEY:
            key = data[p : p + klen]
            p += klen
        yield end, SpooledRecord(topic, key, data[p : p + vlen], seg)
        pos = end


class Spool:
    """The spool of one SDK instance. Thread-safe."""

    def __init__(self, directory: Path, segment_bytes: int = 64 * 1024 * 1024):
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_file = open(directory / "LOCK", "a+b")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise
        self._pending: list[SpooledRecord] = []  # read from disk, not yet handed to Kafka
        self._outstanding: dict[int, int] = {}  # segment -> records handed out, not yet settled
        self._waiting: dict[int, int] = {}  # segment -> records in _pending (not handed out)
        self._writer: BinaryIO | None = None
        self._writer_seg = -1
        self._dirty = False
        self._load()

    @classmethod
    def open_instance(cls, root: Path, **kwargs: int) -> Spool:
        """Open the first free ``root/inst-<n>`` (adopting a dead process's leftovers)."""
        for n in range(1024):
            try:
                return cls(root / f"inst-{n}", **kwargs)
            except BlockingIOError:
                continue
        raise RuntimeError(f"no free spool instance directory under {root}")

    # -- state ----------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("spool-*.log"))

    def _path(self, seg: int) -> Path:
        return self.directory / f"spool-{seg:012d}.log"

    def _load(self) -> None:
        for seg in self._segments():
            path = self._path(seg)
            good_end = 0
            for good_end, record in _read_frames(path, seg):  # noqa: B007 - good_end used below
                self._pending.append(record)
                self._waiting[seg] = self._waiting.get(seg, 0) + 1
            if good_end < path.stat().st_size:
                logger.warning(
                    "spool %s: cutting a torn frame at byte %d (the process died mid-write)",
                    path,
                    good_end,
                )
                with open(path, "r+b") as f:
                    f.truncate(good_end)
            if good_end == 0:
                path.unlink()
        if self._pending:
            logger.warning(
                "spool %s holds %d undelivered events from an earlier run; replaying them",
                self.directory,
                len(self._pending),
            )

    def __len__(self) -> int:
        """Records waiting to be handed to Kafka."""
        with self._lock:
            return len(self._pending)

    @property
    def unsettled(self) -> int:
        """Records handed to Kafka from the spool and not yet acknowledged."""
        with self._lock:
            return sum(self._outstanding.values())

    # -- writing --------------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        with self._lock:
            self._append_locked(topic, key, value)

    def _append_locked(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._writer is None or self._writer.tell() >= self.segment_bytes:
            self._rotate()
        assert self._writer is not None
        self._writer.write(_frame(topic, key, value))
        self._writer.flush()  # into the OS: survives a process crash; sync() makes it durable
        self._dirty = True
        self._pending.append(SpooledRecord(topic, key, value, self._writer_seg))
        self._waiting[self._writer_seg] = self._waiting.get(self._writer_seg, 0) + 1

    def _rotate(self) -> None:
        if self._writer is not None:
            self._writer.close()
        segs = self._segments()
        self._writer_seg = (segs[-1] + 1) if segs else 0
        self._writer = open(self._path(self._writer_seg), "ab")  # noqa: SIM115

    def sync(self) -> None:
        """fsync what was written, so it survives a machine crash too."""
        with self._lock:
            if self._writer is not None and self._dirty:
                os.fsync(self._writer.fileno())
                self._dirty = False

    # -- replay ---------------------------------------------------------------------------

    def take(self, n: int) -> list[SpooledRecord]:
        """Hand out up to n records, oldest first; each must later be `settle`d."""
        with self._lock:
            batch = self._pending[:n]
            del self._pending[:n]
            for r in batch:
                self._outstanding[r.segment] = self._outstanding.get(r.segment, 0) + 1
                self._waiting[r.segment] -= 1
            return batch

    def give_back(self, records: list[SpooledRecord]) -> None:
        """Return records that were taken but not handed to Kafka (its queue was full)."""
        with self._lock:
            self._pending[:0] = records
            for r in records:
                self._outstanding[r.segment] -= 1
                self._waiting[r.segment] += 1

    def settle(self, segment: int) -> None:
        """One record of `segment` was acknowledged, or failed and was appended again."""
        with self._lock:
            self._outstanding[segment] -= 1
            self._collect_locked()

    def _collect_locked(self) -> None:
        # O(segments), not O(records): settle() runs once per acknowledged record
        for seg, count in list(self._outstanding.items()):
            if count == 0 and not self._waiting.get(seg):
                del self._outstanding[seg]
                self._waiting.pop(seg, None)
                if seg == self._writer_seg and self._writer is not None:
                    self._writer.close()
                    self._writer = None
                self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
