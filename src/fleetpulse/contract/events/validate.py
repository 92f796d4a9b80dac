"""Validation of records against their Avro schema, with errors that name the field.

fastavro's own errors on a bad record do not say which field was wrong; these do:
``TaskEvent.tool_calls[1].access: must be one of ['read', 'write'], got 'delete'``.
Validators are compiled once per schema into nested closures, so checking an event costs a few
microseconds.

Example:
    >>> validator("TaskEvent")(event)   # raises EventValidationError, or returns None
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from fleetpulse.contract.errors import EventValidationError
from fleetpulse.contract.events.schemas import SchemaStore

Check = Callable[[Any, str], None]
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


@cache
def validator(name: str) -> Callable[[dict[str, Any]], None]:
    """The validator for the newest version of record ``name``."""
    check = _compile(SchemaStore.default().latest(name).raw, {})

    def validate(record: dict[str, Any]) -> None:
        check(record, name)

    return validate


def _fail(path: str, message: str) -> None:
    raise EventValidationError(path, message)


def _compile(schema: Any, named: dict[str, Check]) -> Check:
    if isinstance(schema, str):
        if schema in named:
            return named[schema]
        return _primitive(schema)
    if isinstance(schema, list):
        return _union([_compile(s, named) for s in schema], schema)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        return _timestamp
    if kind == "record":
        fields = [(f["name"], _compile(f["type"], named), "default" in f) for f in schema["fields"]]

        def check_record(value: Any, path: str) -> None:
            if not isinstance(value, dict):
                _fail(path, f"must be a mapping, got {type(value).__name__}")
            for fname, fcheck, has_default in fields:
                if fname in value:
                    fcheck(value[fname], f"{path}.{fname}")
                elif not has_default:
                    _fail(f"{path}.{fname}", "is required")

        named[schema["name"]] = check_record
        return check_record
    if kind == "enum":
        symbols = frozenset(schema["symbols"])
        shown = sorted(symbols)

        def check_enum(value: Any, path: str) -> None:
            if value not in symbols:
                _fail(path, f"must be one of {shown}, got {value!r}")

        named[schema["name"]] = check_enum
        return check_enum
    if kind == "array":
        item = _compile(schema["items"], named)

        def check_array(value: Any, path: str) -> None:
            if not isinstance(value, list | tuple):
                _fail(path, f"must be a list, got {type(value).__name__}")
            for i, v in enumerate(value):
                item(v, f"{path}[{i}]")

        return check_array
    if kind == "map":
        val = _compile(schema["values"], named)

        def check_map(value: Any, path: str) -> None:
            if not isinstance(value, dict):
                _fail(path, f"must be a mapping, got {type(value).__name__}")
            for k, v in value.items():
                if not isinstance(k, str):
                    _fail(path, f"keys must be strings, got {k!r}")
                val(v, f"{path}[{k!r}]")

        return check_map
    return _compile(kind, named)


def _primitive(kind: str) -> Check:
    def check_string(value: Any, path: str) -> None:
        if not isinstance(value, str):
            _fail(path, f"must be a string, got {type(value).__name__}")

    def check_long(value: Any, path: str) -> None:
        if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
            _fail(path, f"must be a 64-bit integer, got {value!r}")

    def check_int(value: Any, path: str) -> None:
        if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
            _fail(path, f"must be a 32-bit integer, got {value!r}")

    def check_double(value: Any, path: str) -> None:
        if type(value) not in (float, int):
            _fail(path, f"must be a number, got {type(value).__name__}")

    def check_bool(value: Any, path: str) -> None:
        if type(value) is not bool:
            _fail(path, f"must be true or false, got {value!r}")

    def check_null(value: Any, path: str) -> None:
        if value is not None:
            _fail(path, f"must be null, got {value!r}")

    def check_bytes(value: Any, path: str) -> None:
        if not isinstance(value, bytes | bytearray):
            _fail(path, f"must be bytes, got {type(value).__name__}")

    table: dict[str, Check] = {
        "string": check_string,
        "long": check_long,
        "int": check_int,
        "double": check_double,
        "float": check_double,
        "boolean": check_bool,
        "null": check_null,
        "bytes": check_bytes,
    }
    if kind not in table:
        raise ValueError(f"unsupported Avro type {kind!r}")
    return table[kind]


def _timestamp(value: Any, path: str) -> None:
    if type(value) is int:
        return
    if isinstance(value, datetime):
        if value.tzinfo is None:
            _fail(path, "must be timezone-aware (UTC); naive datetimes are ambiguous")
        return
    _fail(path, f"must be microseconds since the epoch or an aware datetime, got {value!r}")


def _union(branches: list[Check], schema: list[Any]) -> Check:
    nullable = "null" in schema
    others = [b for b, s in zip(branches, schema, strict=True) if s != "null"]
    if nullable and len(others) == 1:
        only = others[0]

        def check_optional(value: Any, path: str) -> None:
            if value is not None:
                only(value, path)

        return check_optional

    def check_union(value: Any, path: str) -> None:
        errors = []
        for b in branches:
            try:
                b(value, path)
                return
            except EventValidationError as exc:
                errors.append(str(exc))
        _fail(path, f"matches none of {schema}: {errors}")

    return check_union
