"""Agent bundles: everything that makes an agent behave, as one versioned YAML file.

A bundle is validated here and nowhere else; once published it is immutable and identified by
``(agent_id, version)`` plus the SHA-256 of its canonical JSON (``content_hash``), so two
publishes of the same content are recognisable and a stored bundle can be checked.

Example bundle (``agents/triage.yaml``)::

    agent_id: triage
    description: Sort inbound tickets
    role: support                      # least privilege: the policy's permissions for this role
    model: {name: gpt-4o, provider: openai, parameters: {temperature: 0.2}}
    prompt: |
      You triage support tickets. Ticket: {ticket}
    tools:
      - {integration: zendesk, access: read}
      - {integration: zendesk, access: write, operations: [comment, close]}
    schedule: {cron: "*/5 * * * *", grace_s: 120}   # or {interval_s: 300}
    budget: {daily_usd: 50, monthly_usd: 1000}
    approvals: [zendesk.close]         # integration.operation calls that wait for a human
    breakers: {zendesk: {minimum_calls: 5}}
    alerts: {failure_rate: {threshold: 0.2}}
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.limits import check_json_value
from fleetpulse.contract.policy import BreakerPolicy, Permissions, invalid
from fleetpulse.contract.schedule import Budget, Schedule

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = Field(min_length=1)
    provider: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(BaseModel):
    """One integration the agent uses, and how. ``operations`` empty: any operation."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    integration: str = Field(min_length=1)
    access: Literal["read", "write"] = "read"
    operations: tuple[str, ...] = ()


class AgentBundle(BaseModel):
    """The content of one agent version."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    agent_id: str
    description: str = ""
    role: str = ""
    model: ModelSpec | None = None
    prompt: str = ""
    tools: tuple[ToolSpec, ...] = ()
    schedule: Schedule | None = None
    budget: Budget | None = None
    approvals: tuple[str, ...] = Field(
        default=(), description="integration.operation calls that need a human's approval"
    )
    breakers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("agent_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r} is not an agent id: letters, digits, '.', '_' or '-'")
        return v

    @field_validator("approvals")
    @classmethod
    def _check_approvals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for action in v:
            if not action or action.count(".") < 1:
                raise ValueError(f"{action!r}: write approval actions as integration.operation")
        return v

    @field_validator("breakers")
    @classmethod
    def _check_breakers(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for integration, override in v.items():
            try:
                BreakerPolicy.model_validate({**BreakerPolicy().model_dump(), **override})
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"{integration}.{field}: {err['msg']}") from None
        return v

    # -- identity -------------------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        """The bundle as plain JSON data, defaults included (what is hashed and stored)."""
        return self.model_dump(mode="json")

    @property
    def content_hash(self) -> str:
        return content_hash(self.canonical())

    # -- least privilege ------------------------------------------------------------------

    def allows(self, integration: str, operation: str, access: str) -> bool:
        """Whether the bundle declares this call. A bundle without tools declares nothing and
        narrows nothing (the fleet policy alone decides)."""
        if not self.tools:
            return True
        for t in self.tools:
            if t.integration != integration:
                continue
            if access == "write" and t.access != "write":
                continue
            if not t.operations or operation in t.operations:
                return True
        return False

    def needs_approval(self, integration: str, operation: str) -> bool:
        return f"{integration}.{operation}" in self.approvals

    def excess_grants(self, permissions: Permissions) -> list[str]:
        """The tools this bundle declares that its role is not granted by the fleet policy."""
        return [
            f"{t.access} {t.integration}"
            for t in self.tools
            if not permissions.allows(self.role, t.integration, t.access)
        ]


def content_hash(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of a bundle, as 64 hex chars."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_bundle(data: Any, *, source: str = "bundle") -> AgentBundle:
    """Validate bundle data (a mapping), or raise a ConfigError naming the field and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a bundle is a mapping with agent_id, model, prompt, tools...",
            field="bundle",
            source=source,
        )
    try:
        check_json_value(data, source)  # what a governance event cannot carry
    except ValueError as exc:
        raise ConfigError(str(exc), field="bundle", source=source) from None
    try:
        return AgentBundle.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, f"{source}: invalid bundle", source, inputs=False) from None


def load_bundle(path: Path) -> AgentBundle:
    """Read and validate a bundle YAML file."""
    # lazy on purpose: with the first bundle file, ~15 ms `from fleetpulse import Fleet` never pays
    import yaml  # noqa: PLC0415

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the bundle ({exc.strerror})", field="bundle", source=str(path)
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML: {exc}", field="bundle", source=str(path)
        ) from None
    return parse_bundle(raw, source=str(path))


def to_yaml(data: dict[str, Any]) -> str:
    import yaml  # noqa: PLC0415  (lazy on purpose, see load_bundle)

    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True, width=100)


def diff(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    """A unified diff of two bundles' canonical YAML ('' when they are equal)."""
    return "".join(
        difflib.unified_diff(
            to_yaml(old).splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )
