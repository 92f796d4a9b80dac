"""The Avro schemas shipped in `schemas/`: one file per record type and version.

File names are `<Record>.v<N>.avsc`. The newest version of a record is the reader schema;
every version is a possible writer, found by its CRC-64-AVRO fingerprint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from fleetpulse.contract.resources import resource_dir

_FILE_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*)\.v(?P<version>\d+)\.avsc$")

RECORD_NAMES = ("TaskEvent", "MetricSnapshot", "ControlMessage", "Alert", "GovernanceEvent")


@dataclass(frozen=True)
class SchemaVersion:
    """One schema file, parsed."""

    name: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as single-object encoding writes it

    @property
    def json(self) -> str:
        return json.dumps(self.raw)

    @cached_property
    def plain(self) -> Any:
        """The schema parsed without logical types: timestamps decode as epoch-micros ints,
        several times cheaper than datetimes (the stream processors' hot path)."""
        return parse_schema(_strip_logical_types(self.raw), named_schemas={})


class SchemaStore:
    """All schema versions in one directory.

    Example:
        >>> store = SchemaStore.default()
        >>> store.latest("TaskEvent").version
        1
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._versions: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(directory.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise ValueError(f"{path}: schema files are named <Record>.v<N>.avsc")
            raw = json.loads(path.read_text())
            if raw.get("name") != m["name"]:
                raise ValueError(f"{path}: record name {raw.get('name')!r} != file name")
            sv = _load(m["name"], int(m["version"]), path, raw)
            self._versions.setdefault(sv.name, []).append(sv)
            self._by_fingerprint[sv.fingerprint] = sv
        for versions in self._versions.values():
            versions.sort(key=lambda v: v.version)

    @classmethod
    @cache
    def default(cls) -> SchemaStore:
        """The schemas shipped with fleetpulse (loaded once per process)."""
        return cls(resource_dir("schemas"))

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        try:
            return list(self._versions[name])
        except KeyError:
            raise KeyError(f"no schema for record {name!r} in {self.directory}") from None

    def latest(self, name: str) -> SchemaVersion:
        return self.versions(name)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _load(name: str, version: int, path: Path, raw: dict[str, Any]) -> SchemaVersion:
    # each file gets its own namespace of named types: two versions both define ToolCall
    parsed = parse_schema(raw, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(name, version, path, raw, parsed, fp)
