"""Checkpoints of a source partition's windows: how a restarted metric worker is back to live
output in seconds instead of replaying up to 24 hours of task events.

What is saved, per task-events partition a worker owns (``SourceState``): the last offset its
windows hold, its watermark, every scope's windows (the five flat arrays of ``table.py`` and the
instant the running totals were slid to, copied as raw bytes) and the global cells not yet
published. Restoring it and replaying the few task events after that offset gives exactly the
windows a replay of the whole history would have given: the windows are a function of the
events up to an offset, and the checkpoint is that function's value at one. The scopes changed since
the last snapshot round are saved too, so a restart publishes what changed, not every scope.

Why a checkpoint and not the cells as a changelog: the windows of 10,000 agents hold about a
million buckets; a changelog of them would be read back record by record (a million records,
each parsed in Python), while a checkpoint is a few arrays per scope copied with ``frombytes``.

On Kafka, two internal topics: the chunks of each checkpoint (at most ``CHUNK`` bytes each,
compressed by the producer) go to ``processors.windows-state`` (deleted after a few hours, never
compacted), and once every chunk is acknowledged, a small manifest naming where they start goes
to ``processors.windows-checkpoints`` (compacted: the newest manifest per group and source
partition). A reader takes the manifest, seeks to the first chunk and reads just those records,
whatever else the state topic holds. A worker killed while writing leaves the previous manifest
in place, naming a complete checkpoint; each chunk carries its generation and the manifest a
CRC of the whole, so a reader never mixes two checkpoints.

Pure encoding here (``encode_source``, ``decode_source``); ``CheckpointStore`` is the Kafka
edge.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from sys import intern
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from fleetpulse.contract.kafka_config import consumer_config
from fleetpulse.processors.compacted import read_all
from fleetpulse.processors.produce import produce
from fleetpulse.processors.windows.buckets import ScopeWindows

logger = logging.getLogger(__name__)

FORMAT = 1
CHUNK = 900_000  # under Kafka's default 1 MB record limit
_HEAD = struct.Struct("<q")  # a chunk's generation
_ARRAYS = ("keys", "cells", "bin_end", "bin_keys", "bin_counts")


@dataclass
class SourceCheckpoint:
    """What a checkpoint restores of one source partition (see ``SourceState``)."""

    partition: int
    offset: int
    watermark_us: int | None
    local: dict[Any, ScopeWindows]
    glob: dict[Any, ScopeWindows]
    dirty_local: set[Any]  # local scopes changed since the last snapshot round
    dirty_cells: set[tuple[Any, int, int]]  # global cells not yet published
    # local scopes changed since their long horizons were last sent (None: not known, as in a
    # checkpoint written before long horizons had a cadence of their own: all of them)
    stale_local: set[Any] | None = None


# -- encoding (pure) ---------------------------------------------------------------------------


def encode_source(cp: SourceCheckpoint) -> bytes:
    """One source partition's windows as bytes (``decode_source`` reads them back)."""
    head = {
        "format": FORMAT,
        "partition": cp.partition,
        "offset": cp.offset,
        "watermark_us": cp.watermark_us,
        "local": len(cp.local),
        "glob": len(cp.glob),
        "dirty_local": [_key_json(k) for k in sorted(cp.dirty_local)],
        "dirty_cells": [[_key_json(k), li, start] for k, li, start in sorted(cp.dirty_cells)],
    }
    if cp.stale_local is not None:
        head["stale_local"] = [_key_json(k) for k in sorted(cp.stale_local)]
    parts = [_blob(orjson.dumps(head))]
    for scopes in (cp.local, cp.glob):
        for key, w in scopes.items():
            parts.append(_blob(orjson.dumps(_key_json(key))))
            parts.append(_HEAD.pack(-1 if w.slid_us is None else w.slid_us))
            for name in _ARRAYS:
                col: array[int] = getattr(w, name)
                parts.append(col.typecode.encode() + _HEAD.pack(len(col)) + col.tobytes())
    return b"".join(parts)


def decode_source(data: bytes) -> SourceCheckpoint:
    """Raises ValueError when ``data`` is not a checkpoint this version can read."""
    view = memoryview(data)
    try:
        pos, raw = _read_blob(view, 0)
        head = orjson.loads(raw)
        if head.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {head.get('format')!r}, expected {FORMAT}")
        out = SourceCheckpoint(
            partition=int(head["partition"]),
            offset=int(head["offset"]),
            watermark_us=head["watermark_us"],
            local={},
            glob={},
            dirty_local={_key_of(k) for k in head["dirty_local"]},
            dirty_cells={(_key_of(k), int(li), int(s)) for k, li, s in head["dirty_cells"]},
            stale_local=(
                {_key_of(k) for k in head["stale_local"]} if "stale_local" in head else None
            ),
        )
        for scopes, n in ((out.local, head["local"]), (out.glob, head["glob"])):
            for _ in range(int(n)):
                pos, raw = _read_blob(view, pos)
                key = _key_of(orjson.loads(raw))
                (slid,) = _HEAD.unpack_from(view, pos)
                pos += _HEAD.size
                w = ScopeWindows()
                w.slid_us = None if slid == -1 else slid
                for name in _ARRAYS:
                    code = chr(view[pos])
                    (length,) = _HEAD.unpack_from(view, pos + 1)
                    pos += 1 + _HEAD.size
                    col = array(code)
                    size = length * col.itemsize
                    if length < 0 or pos + size > len(view):
                        raise ValueError("unreadable checkpoint: truncated")
                    col.frombytes(view[pos : pos + size])
                    pos += size
                    setattr(w, name, col)
                scopes[key] = w
    except (KeyError, TypeError, IndexError, struct.error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"unreadable checkpoint: {exc}") from None
    if pos != len(view):
        raise ValueError(f"unreadable checkpoint: {len(view) - pos} bytes after the last scope")
    return out


def _blob(b: bytes) -> bytes:
    return _HEAD.pack(len(b)) + b


def _read_blob(view: memoryview, pos: int) -> tuple[int, bytes]:
    (n,) = _HEAD.unpack_from(view, pos)
    start = pos + _HEAD.size
    if n < 0 or start + n > len(view):
        raise ValueError("unreadable checkpoint: truncated")
    return start + n, bytes(view[start : start + n])


def _key_json(key: Any) -> list[Any]:
    return [key[0], [list(d) for d in key[1]]]


def _key_of(j: list[Any]) -> Any:
    return (intern(j[0]), tuple((intern(d), intern(v)) for d, v in j[1]))


# -- on Kafka ----------------------------------------------------------------------------------


class CheckpointStore:
    """Writes and reads the checkpoints of one consumer group. ``state``: the chunks' topic;
    ``manifests``: the manifests' topic. Source partition ``p`` keeps its chunks in the state
    topic's partition ``p % partitions``."""

    def __init__(
        self, bootstrap: str, *, state: str, manifests: str, group: str, partitions: int
    ) -> None:
        self.bootstrap = bootstrap
        self.state = state
        self.manifests = manifests
        self.group = group
        self.partitions = partitions

    def write(
        self, producer: Producer, partition: int, data: bytes, *, offset: int, generation: int
    ) -> None:
        """Write one encoded checkpoint of source ``partition`` (``encode_source``), complete
        up to source ``offset``: the chunks, then, once all are acknowledged, the manifest.

        Raises:
            RuntimeError: a chunk or the manifest was not delivered (the previous checkpoint
                stays the one a restart reads).
        """
        dest = partition % self.partitions
        head = _HEAD.pack(generation)
        delivered: list[tuple[int, int]] = []  # (chunk index, offset)
        failed: list[str] = []

        def on_delivery(i: int) -> Any:
            def done(err: Any, msg: Any) -> None:
                if err is not None:
                    failed.append(str(err))
                else:
                    delivered.append((i, msg.offset()))

            return done

        chunks = list(_chunks(data))
        for i, chunk in enumerate(chunks):
            key = f"{self.group}/{partition}/{generation}/{i}".encode()
            produce(producer, self.state, head + chunk, key, dest, on_delivery=on_delivery(i))
        producer.flush(60)
        if failed or len(delivered) != len(chunks):
            raise RuntimeError(f"checkpoint chunks not delivered: {failed[:1] or 'timeout'}")
        offsets = [o for _, o in sorted(delivered)]
        manifest = {
            "generation": generation,
            "state_partition": dest,
            "first_offset": offsets[0],
            "last_offset": offsets[-1],
            "chunks": len(chunks),
            "bytes": len(data),
            "crc": zlib.crc32(data),
            "offset": offset,
        }
        key = f"{self.group}/{partition}".encode()
        produce(producer, self.manifests, orjson.dumps(manifest), key, on_delivery=on_delivery(-1))
        producer.flush(30)
        if failed or len(delivered) != len(chunks) + 1:
            raise RuntimeError(f"checkpoint manifest not delivered: {failed[:1] or 'timeout'}")

    def manifests_of(self, timeout_s: float = 30.0) -> dict[int, dict[str, Any]]:
        """The newest manifest of each source partition of this group."""
        out: dict[int, dict[str, Any]] = {}
        prefix = f"{self.group}/"
        for key, value in read_all(self.bootstrap, self.manifests, timeout_s):
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                try:
                    out[int(key[len(prefix) :])] = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue
        return out

    def read(
        self, partition: int, manifest: dict[str, Any], timeout_s: float = 30.0
    ) -> SourceCheckpoint | None:
        """The checkpoint ``manifest`` names, or None when it is gone or damaged (the caller
        replays the history instead)."""
        gen, n = int(manifest["generation"]), int(manifest["chunks"])
        first, last = int(manifest["first_offset"]), int(manifest["last_offset"])
        name = f"{self.group}/{partition} generation {gen}"
        prefix = f"{self.group}/{partition}/{gen}/"
        parts: dict[int, bytes] = {}
        tp = TopicPartition(self.state, int(manifest["state_partition"]), first)
        consumer = Consumer(
            {
                **consumer_config(self.bootstrap, f"{self.group}-checkpoint-reader"),
                "enable.auto.commit": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
            }
        )
        try:
            low, _ = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if first < low:
                logger.warning("checkpoint %s: its chunks have expired", name)
                return None
            consumer.assign([tp])
            position = first
            deadline = time.monotonic() + timeout_s
            while position <= last:
                # consume() waits for as many records as asked: ask for what is left
                msgs = consumer.consume(min(1000, last - position + 1), timeout=1.0)
                if not msgs and time.monotonic() > deadline:
                    logger.warning("checkpoint %s: chunks not readable in time", name)
                    return None
                for m in msgs:
                    if m.error() is not None:
                        continue
                    position = (m.offset() or 0) + 1
                    key = (m.key() or b"").decode(errors="replace")
                    value = m.value() or b""
                    if key.startswith(prefix) and _HEAD.unpack_from(value, 0)[0] == gen:
                        parts[int(key[len(prefix) :])] = value[_HEAD.size :]
        finally:
            consumer.close()
        if sorted(parts) != list(range(n)):
            logger.warning("checkpoint %s is incomplete", name)
            return None
        data = b"".join(parts[i] for i in range(n))
        if zlib.crc32(data) != manifest["crc"]:
            logger.warning("checkpoint %s fails its checksum", name)
            return None
        try:
            return decode_source(data)
        except ValueError as exc:
            logger.warning("checkpoint %s: %s", name, exc)
            return None


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, max(len(data), 1), CHUNK):
        yield data[i : i + CHUNK]
