"""Model cost from a versioned price table, in exact integer micro-USD.

Prices are USD per million tokens, which is the same number as micro-USD per token, kept as
decimal strings so no float ever touches money. ``cached_tokens`` are the part of
``input_tokens`` served from the provider's prompt cache and are billed at ``cached_input``.

Model names match exactly, else by the longest table entry that prefixes them, so dated
snapshots (``gpt-4o-2024-08-06``) price as their family (``gpt-4o``).

Example:
    >>> table = PriceTable.default()
    >>> table.cost_micros("gpt-4o", input_tokens=1000, output_tokens=200)
    4500
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from fleetpulse.contract.errors import ConfigError

_DEFAULT = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class ModelPrice:
    provider: str
    input: Decimal
    output: Decimal
    cached_input: Decimal


class PriceTable:
    """A price table file: ``{"version": ..., "models": {name: {input, output, cached_input}}}``."""

    def __init__(self, version: str, models: dict[str, ModelPrice], source: str = "<memory>"):
        self.version = version
        self.models = models
        self.source = source
        # longest names first, so the most specific prefix wins
        self._by_length = sorted(models, key=len, reverse=True)
        self._resolved: dict[str, str | None] = {}

    @classmethod
    @cache
    def default(cls) -> PriceTable:
        return cls.load(_DEFAULT)

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"price table {path} does not exist. Fix: point FLEETPULSE_PRICE_TABLE at a JSON "
                "file shaped like fleetpulse/sdk/prices.json",
                field="price_table",
                source=str(path),
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"price table {path} is not valid JSON: {exc}", field="price_table"
            ) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<memory>") -> PriceTable:
        if not isinstance(data.get("version"), str) or not data["version"]:
            raise ConfigError(f"{source}: 'version' must be a non-empty string", field="version")
        models = {}
        for name, entry in (data.get("models") or {}).items():
            try:
                models[name] = ModelPrice(
                    provider=str(entry.get("provider", "")),
                    input=_price(entry["input"]),
                    output=_price(entry["output"]),
                    cached_input=_price(entry.get("cached_input", entry["input"])),
                )
            except (KeyError, InvalidOperation, ValueError, TypeError) as exc:
                raise ConfigError(
                    f"{source}: models.{name}: needs decimal 'input' and 'output' prices in USD "
                    f"per million tokens ({type(exc).__name__}: {exc})",
                    field=f"models.{name}",
                ) from None
        return cls(data["version"], models, source)

    def lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        """The table entry for ``model``: exact name, else the longest prefix."""
        if model not in self._resolved:
            if model in self.models:
                self._resolved[model] = model
            else:
                self._resolved[model] = next(
                    (n for n in self._by_length if model.startswith(n)), None
                )
        name = self._resolved[model]
        return (name, self.models[name]) if name else None

    def cost_micros(
        self, model: str, *, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0
    ) -> int | None:
        """Cost in micro-USD, rounded half-even; None when the model is not in the table."""
        found = self.lookup(model)
        if found is None:
            return None
        price = found[1]
        uncached = max(input_tokens - cached_tokens, 0)
        total = (
            uncached * price.input
            + min(cached_tokens, input_tokens) * price.cached_input
            + output_tokens * price.output
        )
        return int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _price(value: Any) -> Decimal:
    d = Decimal(str(value))
    if d < 0:
        raise ValueError("prices cannot be negative")
    return d
