"""Where the files shipped with fleetpulse live.

The Avro schemas (`schemas/`) and the Kafka runtime pom (`infra/kafka/`) are public contract at
the top of the repository. A built wheel carries copies under `fleetpulse/_data/`; an editable
install (the Makefile's) reads them from the checkout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # src/fleetpulse (this file is in contract/)
_REPO = _PACKAGE.parents[1]

_LOCATIONS = {
    "schemas": (_PACKAGE / "_data" / "schemas", _REPO / "schemas"),
    "kafka": (_PACKAGE / "_data" / "kafka", _REPO / "infra" / "kafka"),
}


def resource_dir(name: str) -> Path:
    """Return the directory of a shipped resource: ``"schemas"`` or ``"kafka"``."""
    for candidate in _LOCATIONS[name]:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"fleetpulse resource {name!r} not found in {[str(p) for p in _LOCATIONS[name]]}: "
        "the installation is incomplete; reinstall fleetpulse"
    )
