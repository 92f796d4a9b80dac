"""The on-disk spool: order, durability across instances, torn frames, locking."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse.sdk import Spool


def _drain(spool: Spool) -> list[tuple[str, bytes | None, bytes]]:
    out = []
    while batch := spool.take(3):
        for r in batch:
            out.append((r.topic, r.key, r.value))
            spool.settle(r.segment)
    return out


def test_records_come_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64)  # tiny segments: many rotations
    expected = [("t", f"k{i}".encode() if i % 3 else None, f"v{i}".encode()) for i in range(50)]
    for rec in expected:
        spool.append(*rec)
    assert len(spool) == 50
    assert _drain(spool) == expected
    assert len(spool) == 0 and spool.unsettled == 0
    spool.close()
    assert list(tmp_path.glob("spool-*.log")) == []  # settled segments are deleted


def test_a_new_instance_replays_what_the_last_one_left(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append("t", None, b"%d" % i)
    taken = spool.take(4)  # handed to Kafka, never acknowledged: must come back too
    assert len(taken) == 4
    spool.close()
    again = Spool(tmp_path)
    assert [v for _, _, v in _drain(again)] == [b"%d" % i for i in range(10)]


def test_a_torn_frame_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append("t", b"k", b"value-%d" % i)
    spool.close()
    [segment] = tmp_path.glob("spool-*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-4])  # the process died mid-write
    again = Spool(tmp_path)
    assert [v for _, _, v in _drain(again)] == [b"value-0", b"value-1"]


def test_give_back_keeps_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append("t", None, b"%d" % i)
    batch = spool.take(5)
    spool.give_back(batch[2:])
    for r in batch[:2]:
        spool.settle(r.segment)
    assert [v for _, _, v in _drain(spool)] == [b"2", b"3", b"4"]


def test_one_process_per_directory(tmp_path: Path) -> None:
    first = Spool.open_instance(tmp_path)
    second = Spool.open_instance(tmp_path)
    assert first.directory != second.directory
    with pytest.raises(BlockingIOError):
        Spool(first.directory)
    first.close()
    third = Spool.open_instance(tmp_path)  # adopts the free directory
    assert third.directory == first.directory
