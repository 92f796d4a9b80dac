"""The wire formats: round trips for every record type, fingerprints, framing errors."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many

from fleetpulse.contract.errors import CodecError, UnknownSchemaError
from fleetpulse.contract.events import RECORD_NAMES, SINGLE_OBJECT_MARKER, AvroCodec, SchemaStore
from fleetpulse.testing import to_micros

STORE = SchemaStore.default()


def _rabin(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_every_record_type_has_a_schema() -> None:
    assert set(STORE.names()) == set(RECORD_NAMES)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_single_object_round_trip(name: str) -> None:
    codec = AvroCodec()
    for record in generate_many(STORE.latest(name).parsed, 20):
        data = codec.encode(name, record)
        assert data[:2] == SINGLE_OBJECT_MARKER
        assert data[2:10] == STORE.latest(name).fingerprint
        assert to_micros(codec.decode(data, name)) == record


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_confluent_wire_format_round_trip(name: str) -> None:
    codec = AvroCodec(registry_url=f"mock://{name}")
    topic = f"fleetpulse.{name.lower()}"
    for record in generate_many(STORE.latest(name).parsed, 5):
        data = codec.encode(name, record, topic=topic)
        assert data[0] == 0  # Confluent magic byte, then a 4-byte schema id
        assert to_micros(codec.decode(data, name, topic=topic)) == record


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_fingerprint_is_crc64_avro_of_canonical_form_little_endian(name: str) -> None:
    from fastavro.schema import to_parsing_canonical_form

    sv = STORE.latest(name)
    canonical = to_parsing_canonical_form(sv.parsed).encode()
    assert sv.fingerprint == _rabin(canonical).to_bytes(8, "little")


PINNED_V1_FINGERPRINTS = {
    "TaskEvent": "b8620930d495f62a",
    "MetricSnapshot": "d34884058e1fc481",
    "ControlMessage": "fd433a4cdd67c7c2",
    "Alert": "3aa6492a55fb181c",
    "GovernanceEvent": "b32463b0d41e42b9",
}


def test_v1_fingerprints_are_stable() -> None:
    """Editing a shipped schema moves its fingerprint and strands every agent already
    deployed. If this fails, revert the edit and add a v2 file instead."""
    actual = {name: STORE.versions(name)[0].fingerprint.hex() for name in RECORD_NAMES}
    assert actual == PINNED_V1_FINGERPRINTS


def test_doc_edits_do_not_move_the_fingerprint() -> None:
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    raw: dict[str, Any] = dict(STORE.versions("Alert")[0].raw)
    raw["doc"] = "edited"
    assert (
        fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
        == (PINNED_V1_FINGERPRINTS["Alert"])
    )


def test_unknown_fingerprint_is_reported_with_its_position() -> None:
    codec = AvroCodec()
    data = SINGLE_OBJECT_MARKER + b"\x00" * 8 + b"\x02"
    with pytest.raises(UnknownSchemaError) as info:
        codec.decode(data, "TaskEvent", topic="t", partition=2, offset=99)
    assert info.value.offset == 99
    assert "t[2]@99" in str(info.value)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty value"),
        (b"{json}", "not Avro single-object or Confluent framing"),
        (b"\x00\x00\x00\x00\x07rest", "no registry is configured"),
    ],
)
def test_undecodable_bytes_raise_codec_error(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        AvroCodec().decode(data, "TaskEvent")


def test_wrong_record_type_is_refused() -> None:
    codec = AvroCodec()
    record = next(iter(generate_many(STORE.latest("Alert").parsed, 1)))
    with pytest.raises(CodecError, match="expected a TaskEvent record, got Alert"):
        codec.decode(codec.encode("Alert", record), "TaskEvent")


def test_truncated_body_raises_codec_error() -> None:
    codec = AvroCodec()
    record = next(iter(generate_many(STORE.latest("TaskEvent").parsed, 1)))
    data = codec.encode("TaskEvent", record)
    with pytest.raises(CodecError, match="corrupt TaskEvent body"):
        codec.decode(data[: len(data) // 2], "TaskEvent")


def test_single_object_body_is_plain_avro() -> None:
    """Agents in other languages write the body with any Avro library."""
    codec = AvroCodec()
    sv = STORE.latest("ControlMessage")
    record = next(iter(generate_many(sv.parsed, 1)))
    buf = BytesIO()
    schemaless_writer(buf, sv.parsed, record)
    assert codec.encode("ControlMessage", record) == SINGLE_OBJECT_MARKER + sv.fingerprint + (
        buf.getvalue()
    )
