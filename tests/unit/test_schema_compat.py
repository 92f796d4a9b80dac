"""Every schema version reads the data of the one before it (backward compatibility)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetpulse.contract.events import RECORD_NAMES, SchemaStore, check_backward_compatible

STORE = SchemaStore.default()
PAIRS = [
    pytest.param(old, new, id=f"{new.name}.v{old.version}->v{new.version}")
    for name in RECORD_NAMES
    for old, new in zip(STORE.versions(name), STORE.versions(name)[1:], strict=False)
]


def test_every_record_type_starts_at_v1_with_no_gaps() -> None:
    for name in RECORD_NAMES:
        versions = [v.version for v in STORE.versions(name)]
        assert versions == list(range(1, len(versions) + 1)), name


@pytest.mark.parametrize("old, new", PAIRS)
def test_new_version_reads_previous_version(old, new) -> None:  # type: ignore[no-untyped-def]
    check_backward_compatible(old, new)


def _store_with_v2(tmp_path: Path, change) -> SchemaStore:  # type: ignore[no-untyped-def]
    v1 = STORE.latest("TaskEvent")
    raw = json.loads(json.dumps(v1.raw))
    (tmp_path / "TaskEvent.v1.avsc").write_text(json.dumps(v1.raw))
    change(raw)
    (tmp_path / "TaskEvent.v2.avsc").write_text(json.dumps(raw))
    return SchemaStore(tmp_path)


def test_checker_accepts_a_field_added_with_a_default(tmp_path: Path) -> None:
    store = _store_with_v2(
        tmp_path,
        lambda raw: raw["fields"].append({"name": "region", "type": "string", "default": ""}),
    )
    check_backward_compatible(*store.versions("TaskEvent"))


def test_checker_rejects_a_field_added_without_a_default(tmp_path: Path) -> None:
    store = _store_with_v2(
        tmp_path, lambda raw: raw["fields"].append({"name": "region", "type": "string"})
    )
    with pytest.raises(AssertionError, match=r"TaskEvent\.v2\.avsc cannot read"):
        check_backward_compatible(*store.versions("TaskEvent"))


def test_checker_rejects_a_removed_enum_symbol(tmp_path: Path) -> None:
    def drop_denied(raw: dict) -> None:  # type: ignore[type-arg]
        outcome = next(f for f in raw["fields"] if f["name"] == "outcome")
        outcome["type"]["symbols"] = ["success", "failure"]

    store = _store_with_v2(tmp_path, drop_denied)
    with pytest.raises(AssertionError):
        check_backward_compatible(*store.versions("TaskEvent"), samples=200)


def test_decoder_resolves_an_old_writer_against_the_new_reader(tmp_path: Path) -> None:
    from fastavro.utils import generate_one

    from fleetpulse.contract.events import AvroCodec

    store = _store_with_v2(
        tmp_path,
        lambda raw: raw["fields"].append({"name": "region", "type": "string", "default": "eu"}),
    )
    v1, _ = store.versions("TaskEvent")
    old_codec = AvroCodec(SchemaStore(tmp_path))
    record = generate_one(v1.parsed)
    # encode with v1 explicitly, decode with a codec whose newest schema is v2
    from io import BytesIO

    from fastavro import schemaless_writer

    buf = BytesIO()
    schemaless_writer(buf, v1.parsed, record)
    data = b"\xc3\x01" + v1.fingerprint + buf.getvalue()
    decoded = old_codec.decode(data, "TaskEvent")
    assert decoded["region"] == "eu"
    assert decoded["event_id"] == record["event_id"]
