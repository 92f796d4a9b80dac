"""Backward compatibility between schema versions: a new reader must read old writers' data.

The check is behavioural, not a rule list: records generated from the old schema are encoded
with it and decoded with the new one through fastavro's schema resolution. A field added
without a default, a type narrowed, or an enum symbol removed makes resolution fail.
"""

from __future__ import annotations

from io import BytesIO

from fastavro import schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from fleetpulse.contract.events.schemas import SchemaVersion


def check_backward_compatible(old: SchemaVersion, new: SchemaVersion, samples: int = 50) -> None:
    """Raise ``AssertionError`` naming both files when ``new`` cannot read ``old``'s data."""
    for record in generate_many(old.parsed, samples):
        buf = BytesIO()
        schemaless_writer(buf, old.parsed, record)
        buf.seek(0)
        try:
            schemaless_reader(buf, old.parsed, new.parsed)
        except Exception as exc:
            raise AssertionError(
                f"{new.path.name} cannot read data written with {old.path.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
