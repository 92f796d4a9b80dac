"""The fleet policy: one declarative YAML file (``FLEETPULSE_POLICY``) validated by pydantic.

Sections: ``breakers`` (thresholds), ``permissions`` (least privilege: which integrations each
agent role may read or write) and ``governance`` (who may move the production label, when a
pending approval pages) and ``alerts`` (rules, teams, budgets, schedules: see
``alert_rules.py``). A bad file fails at start
with a ``ConfigError`` naming the file, the field and the fix.

Example policy::

    breakers:
      defaults:                      # every integration breaker, resilience4j names and meaning
        failure_rate_threshold: 0.5  # open when >= 50% of the calls in the window failed
        slow_call_duration_ms: 10000
        slow_call_rate_threshold: 1.0
        minimum_calls: 20            # ... and the window holds at least 20 calls
        sliding_window_s: 30
        wait_in_open_s: 10
        permitted_calls_in_half_open: 10
      integrations:
        salesforce: {failure_rate_threshold: 0.3}
      agents:
        triage:
          integrations: {gmail: {minimum_calls: 5}}
          breaker: {enabled: true}   # opt in: pause triage when its own failure rate is critical
    permissions:                     # agent role -> integration -> accesses; absent: not enforced
      support: {zendesk: [read, write], salesforce: [read]}
      reporting: {"*": [read]}       # "*": every integration
    governance:
      production_requires_second_person: true   # the author of a version cannot promote it
      approval_alert_after_s: 300    # a request pending longer raises an alert
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetpulse.contract.alert_rules import AlertsSection
from fleetpulse.contract.errors import ConfigError

FailureStatus = Literal["error", "timeout", "denied"]


class BreakerPolicy(BaseModel):
    """The thresholds of one breaker (resilience4j's CircuitBreakerConfig, time-based window)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    enabled: bool = True
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    slow_call_duration_ms: float = Field(default=10_000, gt=0)
    slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1)
    minimum_calls: int = Field(default=20, ge=1)
    sliding_window_s: int = Field(default=30, ge=1, le=3600)
    wait_in_open_s: float = Field(default=10, gt=0)
    permitted_calls_in_half_open: int = Field(default=10, ge=1)
    max_wait_in_half_open_s: float = Field(
        default=0, ge=0, description="back to OPEN if the probes have not all come back; 0: wait"
    )
    # which call outcomes count as failures; denied calls are the agent's own doing, not the
    # integration's, so by default they count neither way
    failure_statuses: frozenset[FailureStatus] = frozenset({"error", "timeout"})
    # error types (client errors such as HTTP4xx, ValidationError) ignored entirely, like
    # resilience4j's ignoreExceptions; when record_error_types is set, only those count
    ignore_error_types: frozenset[str] = frozenset()
    record_error_types: frozenset[str] = frozenset()


class AgentBreakerPolicy(BreakerPolicy):
    """An agent breaker pauses an agent whose own task failure rate is critical (opt-in)."""

    enabled: bool = False
    failure_rate_threshold: float = Field(default=0.9, gt=0, le=1)
    slow_call_duration_ms: float = Field(default=600_000, gt=0)
    minimum_calls: int = Field(default=20, ge=1)
    sliding_window_s: int = Field(default=60, ge=1, le=3600)
    wait_in_open_s: float = Field(default=60, gt=0)
    permitted_calls_in_half_open: int = Field(default=5, ge=1)


class AgentBreakers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    breaker: dict[str, Any] = Field(default_factory=dict)


class BreakersSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    defaults: BreakerPolicy = Field(default_factory=BreakerPolicy)
    # agent x integration breakers (one agent's calls to one integration), on by default
    per_agent: bool = True
    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    agent_defaults: AgentBreakerPolicy = Field(default_factory=AgentBreakerPolicy)
    agents: dict[str, AgentBreakers] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_overrides(self) -> BreakersSection:
        # resolve every override now, so a typo fails at start and not at the first trip
        for name in self.integrations:
            self.for_integration(name)
        for agent, spec in self.agents.items():
            for name in spec.integrations:
                self.for_agent_integration(agent, name)
            self.for_agent(agent)
        return self

    def for_integration(self, integration: str) -> BreakerPolicy:
        return _merge(
            self.defaults, self.integrations.get(integration), f"integrations.{integration}"
        )

    def for_agent_integration(self, agent_id: str, integration: str) -> BreakerPolicy:
        base = self.for_integration(integration)
        spec = self.agents.get(agent_id)
        extra = spec.integrations.get(integration) if spec else None
        policy = _merge(base, extra, f"agents.{agent_id}.integrations.{integration}")
        if not self.per_agent and not extra:
            return policy.model_copy(update={"enabled": False})
        return policy

    def for_agent(self, agent_id: str) -> BreakerPolicy:
        spec = self.agents.get(agent_id)
        return _merge(self.agent_defaults, spec.breaker if spec else None, f"agents.{agent_id}")

    def call_policies(self) -> list[BreakerPolicy]:
        """Every policy a call breaker can have: the defaults and each override."""
        found = [self.defaults, *(self.for_integration(n) for n in self.integrations)]
        for agent, spec in self.agents.items():
            found += [self.for_agent_integration(agent, n) for n in spec.integrations]
        return found

    def agent_policies(self) -> list[BreakerPolicy]:
        """Every policy an agent breaker can have: the agent defaults and each override."""
        return [self.agent_defaults, *(self.for_agent(a) for a in self.agents)]


def _merge(base: BreakerPolicy, override: dict[str, Any] | None, where: str) -> BreakerPolicy:
    if not override:
        return base
    try:
        return type(base).model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}.{field}: {err['msg']} (got {err.get('input')!r})") from None


Access = Literal["read", "write"]


class GovernancePolicy(BaseModel):
    """Rules of the control plane itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    production_requires_second_person: bool = False
    approval_alert_after_s: float = Field(default=300, gt=0)
    approval_default_timeout_s: float = Field(default=900, gt=0)


class Permissions(BaseModel):
    """Least privilege: agent role -> integration (or ``"*"``) -> the accesses it may use.

    Empty (the default) means permissions are not enforced. Once any role is listed, a role
    that is not listed may use nothing.

    Example:
        >>> p = Permissions(roles={"support": {"zendesk": ["read", "write"], "*": ["read"]}})
        >>> p.allows("support", "zendesk", "write"), p.allows("support", "crm", "write")
        (True, False)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    roles: dict[str, dict[str, frozenset[Access]]] = Field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        return bool(self.roles)

    def allows(self, role: str, integration: str, access: str) -> bool:
        if not self.roles:
            return True
        grants = self.roles.get(role)
        if grants is None:
            return False
        for name in (integration, "*"):
            allowed = grants.get(name)
            if allowed is not None and access in allowed:
                return True
        return False


class FleetPolicy(BaseModel):
    """The whole policy file. Unknown sections fail, so a misspelt one is not silently unused."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    version: int = 1
    breakers: BreakersSection = Field(default_factory=BreakersSection)
    permissions: dict[str, dict[str, frozenset[Access]]] = Field(default_factory=dict)
    governance: GovernancePolicy = Field(default_factory=GovernancePolicy)
    alerts: AlertsSection = Field(default_factory=AlertsSection)

    @cached_property
    def access(self) -> Permissions:
        """The ``permissions`` section as a checker."""
        return Permissions(roles=self.permissions)

    @cached_property
    def longest_breaker_window_s(self) -> int:
        b = self.breakers
        windows = [b.defaults.sliding_window_s, b.agent_defaults.sliding_window_s]
        windows += [b.for_integration(i).sliding_window_s for i in b.integrations]
        for agent, spec in b.agents.items():
            windows += [
                b.for_agent_integration(agent, i).sliding_window_s for i in spec.integrations
            ]
            windows.append(b.for_agent(agent).sliding_window_s)
        return max(windows)


def load_policy(path: Path | None) -> FleetPolicy:
    """The policy at ``path``, or the built-in defaults when it is None.

    Raises:
        ConfigError: the file is missing, is not YAML, or a field is invalid; the message names
            the file, the field and what is expected.
    """
    if path is None:
        return FleetPolicy()
    # lazy on purpose: with the first policy file, ~15 ms `from fleetpulse import Fleet` never pays
    import yaml  # noqa: PLC0415

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"FLEETPULSE_POLICY={path}: cannot read the file ({exc.strerror}). Fix: point "
            "FLEETPULSE_POLICY at a readable YAML file, or unset it for the defaults",
            field="policy",
            source=str(path),
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML: {exc}", field="policy", source=str(path)
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the policy must be a mapping with sections such as `breakers:`",
            field="policy",
            source=str(path),
        )
    try:
        return FleetPolicy.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc, f"{path}: invalid policy", str(path)) from None


def invalid(exc: ValidationError, what: str, source: str, *, inputs: bool = True) -> ConfigError:
    """A ConfigError listing every field pydantic refused and the fix, named after the first.

    ``inputs``: quote the refused values (not for documents that may hold prompts)."""
    lines = []
    first = None
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        first = first or field
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown field. Fix: remove it or correct its spelling")
        elif inputs:
            lines.append(f"{field}: {msg} (got {err.get('input')!r})")
        else:
            lines.append(f"{field}: {msg}")
    return ConfigError(f"{what}: " + "; ".join(lines), field=first, source=source)
