"""Avro encoding at the Kafka boundary.

Two wire formats, and the decoder accepts both:

* **single-object encoding** (default, no registry): ``C3 01`` + the writer schema's 8-byte
  CRC-64-AVRO fingerprint (little-endian) + the Avro body. The writer schema is looked up among
  the schemas shipped in ``schemas/`` and resolved against the newest version (the reader).
* **Confluent wire format** (``FLEETPULSE_SCHEMA_REGISTRY_URL`` set): ``00`` + 4-byte schema id +
  body, through confluent-kafka's own ``AvroSerializer``/``AvroDeserializer``.

Example:
    >>> codec = AvroCodec()
    >>> data = codec.encode("Alert", alert_dict)          # doctest: +SKIP
    >>> codec.decode(data, "Alert")["dedup_key"]            # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from fleetpulse.contract.errors import CodecError, ConfigError, UnknownSchemaError
from fleetpulse.contract.events.schemas import SchemaStore, SchemaVersion

logger = logging.getLogger(__name__)

SINGLE_OBJECT_MARKER = b"\xc3\x01"
HEADER_LEN = 10  # single-object encoding: marker (2) + CRC-64-AVRO fingerprint (8)
CONFLUENT_MAGIC = 0
# the largest value of a record type that is still an event (Kafka's default message size)
MAX_BYTES = {"TaskEvent": 1 << 20}
Record = dict[str, Any]
Encoder = Callable[[Record], bytes]


class AvroCodec:
    """Encodes and decodes fleetpulse records.

    Args:
        store: the schemas; the ones shipped with fleetpulse by default.
        registry_url: a Confluent Schema Registry URL (``mock://name`` works for tests). When
            set, encoding uses the Confluent wire format; decoding accepts both formats.
        logical_types: decode timestamps as datetimes (default) or, when False, as epoch-micros
            ints, which is what the stream processors want and several times cheaper.
    """

    def __init__(
        self,
        store: SchemaStore | None = None,
        registry_url: str | None = None,
        *,
        logical_types: bool = True,
    ):
        self.store = store or SchemaStore.default()
        self.registry_url = registry_url
        self.logical_types = logical_types
        self._registry: Any = None
        self._confluent_serializers: dict[tuple[str, str], Any] = {}
        self._confluent_deserializers: dict[str, Any] = {}

    # -- encoding -------------------------------------------------------------------------

    def encoder(self, name: str, topic: str | None = None) -> Encoder:
        """A fast encoder for one record type (the hot path of the SDK).

        ``topic`` is needed only in registry mode, where the subject is ``<topic>-value``.
        """
        if self.registry_url:
            if topic is None:
                raise ValueError("registry mode needs the topic to name the subject")
            return self._confluent_encoder(name, topic)
        schema = self.store.latest(name)
        header = SINGLE_OBJECT_MARKER + schema.fingerprint
        parsed = schema.parsed

        def encode(record: Record) -> bytes:
            buf = BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
            return buf.getvalue()

        return encode

    def encode(self, name: str, record: Record, topic: str | None = None) -> bytes:
        return self.encoder(name, topic)(record)

    # -- decoding -------------------------------------------------------------------------

    def decode(
        self,
        data: bytes,
        name: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Record:
        """Decode one value written in either wire format as record ``name``, strictly: the
        whole value is the record (no trailing bytes), within ``MAX_BYTES``.

        Raises:
            CodecError: the bytes are not a ``name`` record in a format we know; the error says
                why and where (topic, partition, offset) so the record can go to the DLQ.
        """
        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        if not data:
            raise CodecError("empty value", **where)
        limit = MAX_BYTES.get(name)
        if limit is not None and len(data) > limit:
            raise CodecError(f"{len(data)} bytes: a {name} is at most {limit} bytes", **where)
        if data[:2] == SINGLE_OBJECT_MARKER:
            writer = self.store.by_fingerprint(data[2:HEADER_LEN])
            if writer is None:
                raise UnknownSchemaError(data[2:HEADER_LEN], **where)
            return self._read_single_object(data, writer, name, where)
        if data[0] == CONFLUENT_MAGIC and len(data) >= 5:
            return self._read_confluent(data, name, where)
        raise CodecError(
            f"not Avro single-object or Confluent framing (first bytes {data[:4].hex()})", **where
        )

    def _read_single_object(
        self, data: bytes, writer: SchemaVersion, name: str, where: dict[str, Any]
    ) -> Record:
        if writer.name != name:
            raise CodecError(f"expected a {name} record, got {writer.name}", **where)
        reader = self.store.latest(name)
        if self.logical_types:
            writer_parsed, reader_parsed = writer.parsed, reader.parsed
        else:
            writer_parsed, reader_parsed = writer.plain, reader.plain
        body = BytesIO(memoryview(data)[HEADER_LEN:])
        try:
            result = cast(
                Record,
                schemaless_reader(body, writer_parsed, None if reader is writer else reader_parsed),
            )
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise CodecError(f"corrupt {name} body: {type(exc).__name__}: {exc}", **where) from exc
        extra = len(data) - HEADER_LEN - body.tell()
        if extra:  # a valid body with junk after it is not the record its producer wrote
            raise CodecError(f"{extra} trailing bytes after the {name} body", **where)
        return result

    # -- Confluent wire format ------------------------------------------------------------

    def _registry_client(self) -> Any:
        if self._registry is None:
            # the Confluent wire format is optional (the `registry` extra): its serializers and
            # their HTTP client are imported only when FLEETPULSE_SCHEMA_REGISTRY_URL is set
            try:
                from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415
                from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: F401, PLC0415
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    f"FLEETPULSE_SCHEMA_REGISTRY_URL is set but {exc.name} is not installed: "
                    "pip install 'fleetpulse[registry]', or unset it for single-object encoding",
                    field="schema_registry_url",
                ) from None

            # new_client() also understands mock:// URLs (an in-process registry for tests)
            self._registry = SchemaRegistryClient.new_client({"url": self.registry_url})
        return self._registry

    def _confluent_encoder(self, name: str, topic: str) -> Encoder:
        client = self._registry_client()  # first: it says which extra is missing
        # lazy on purpose: the `registry` extra, only with FLEETPULSE_SCHEMA_REGISTRY_URL
        from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: PLC0415
        from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: PLC0415

        key = (name, topic)
        if key not in self._confluent_serializers:
            self._confluent_serializers[key] = AvroSerializer(
                client,
                self.store.latest(name).json,
                conf={"auto.register.schemas": True},
            )
        serializer = self._confluent_serializers[key]
        ctx = SerializationContext(topic, MessageField.VALUE)

        def encode(record: Record) -> bytes:
            data: bytes = serializer(record, ctx)
            return data

        return encode

    def _read_confluent(self, data: bytes, name: str, where: dict[str, Any]) -> Record:
        schema_id = int.from_bytes(data[1:5], "big")
        if not self.registry_url:
            raise CodecError(
                f"Confluent wire format (schema id {schema_id}) but no registry is configured: "
                "set FLEETPULSE_SCHEMA_REGISTRY_URL",
                **where,
            )
        client = self._registry_client()
        # lazy on purpose: the `registry` extra, only with FLEETPULSE_SCHEMA_REGISTRY_URL
        from confluent_kafka.schema_registry.avro import AvroDeserializer  # noqa: PLC0415
        from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: PLC0415

        if name not in self._confluent_deserializers:
            self._confluent_deserializers[name] = AvroDeserializer(
                client, self.store.latest(name).json
            )
        ctx = SerializationContext(where.get("topic") or "", MessageField.VALUE)
        try:
            result: Record = self._confluent_deserializers[name](data, ctx)
        except Exception as exc:
            raise CodecError(
                f"Confluent-framed {name} (schema id {schema_id}) could not be decoded: {exc}",
                **where,
            ) from exc
        if not self.logical_types:
            result = cast(Record, to_epoch_micros(result))
        return result


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_micros(value: Any) -> Any:
    """Datetimes (as confluent-kafka's deserializer returns them) to exact epoch micros."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, dict):
        return {k: to_epoch_micros(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_epoch_micros(v) for v in value]
    return value
