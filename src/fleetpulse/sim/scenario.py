"""Scenario files: the simulated fleet, the fleet policy it runs under, and a fault timeline.

A scenario is one YAML file (``fleetpulse sim run FILE``; the demo runs the shipped
``incident.yaml``). Validated here; errors name the field.

Example::

    name: small-outage
    seed: 7
    duration_s: 90
    integrations:
      stripe: {latency_ms: 180, spread: 0.35, error_rate: 0.002}
    agents:
      - id: support              # count > 1: support-00, support-01, ...
        count: 3
        role: support
        task_type: triage
        model: gpt-4o-mini
        rate: 1.5                # tasks per second
        tools:
          - {integration: stripe, operation: get_customer, access: read}
    policy: {breakers: {defaults: {minimum_calls: 10}}}   # the fleet policy (FLEETPULSE_POLICY)
    timeline:
      - {at: 20, fault: outage, integration: stripe, for: 30}

Faults (``fault:``), each on for ``for`` seconds unless said otherwise:

* ``outage``: every call to ``integration`` fails (``mode: error`` after ``latency_ms``, or
  ``timeout``);
* ``latency``: ``agent``'s (or ``integration``'s) latency times ``factor``;
* ``runaway``: ``agent`` uses ``factor`` times the tokens (a loop calling the model);
* ``stop``: ``agent`` silently stops running;
* ``bad_output``: ``agent``'s tasks fail, and agents naming it as ``upstream`` fail with them
  (a cascade);
* ``release`` (instant): publish and promote a new version of ``agent`` whose tasks fail at
  ``failure_rate``: a regression;
* ``write_without_permission`` (instant): ``agent`` tries ``count`` writes to ``integration`` on
  ``target``, which its role does not grant.

Scaling (``fleetpulse sim run --scale N``, or ``scale:`` on a group): a group of ``count``
agents runs ``count x scale``. The ``count`` agents the file names keep their names and run
through the SDK, so the timeline acts on them as in the unscaled run; the added agents
(``support-00004``, ...) share the group's behaviour and the world's faults (outages, slow
integrations, a bad upstream, open breakers) but are planned in bulk and produced by one
producer (``bulk.py``): no bundles, approvals or one-shot writes of their own.

Operator actions (``action:``, instant): ``pause``, ``resume`` and ``rollback`` of ``agent``;
``force_open`` and ``reset`` of ``breaker``. They go through the control plane as a principal of
the right role (operations, engineering), like a person at the CLI.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.policy import FleetPolicy, invalid
from fleetpulse.contract.schedule import Budget, Schedule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntegrationSpec(_Strict):
    """A simulated external system: its latency (log-normal) and background error rate."""

    latency_ms: float = Field(gt=0, description="median latency")
    spread: float = Field(default=0.35, ge=0, le=3, description="sigma of log(latency)")
    error_rate: float = Field(default=0.0, ge=0, le=1)


class ToolUse(_Strict):
    integration: str
    operation: str = "call"
    access: Literal["read", "write"] = "read"
    share: float = Field(
        default=1.0, gt=0, le=1, description="fraction of tasks that make this call"
    )


class ApprovalSpec(_Strict):
    """Every ``every``-th task asks a human before ``action`` (a gated integration.operation);
    the simulated approver approves amounts up to ``approve_up_to`` and denies the rest."""

    action: str = Field(pattern=r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
    every: int = Field(ge=1)
    amounts: tuple[int, int] = (20, 900)
    approve_up_to: int = 300


class AgentGroup(_Strict):
    """One or more simulated agents with the same behaviour."""

    id: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,40}$")
    count: int = Field(default=1, ge=1, le=1000)
    role: str = "default"
    task_type: str
    model: str = "gpt-4o-mini"
    rate: float = Field(default=1.0, gt=0, le=1000, description="tasks per second, per agent")
    tokens: tuple[int, int] = Field(default=(1200, 250), description="mean input, output tokens")
    tokens_per_s: float = Field(default=90, gt=0, description="model output speed")
    tools: tuple[ToolUse, ...] = ()
    failure_rate: float = Field(default=0.01, ge=0, le=1, description="the agent's own failures")
    upstream: str | None = Field(
        default=None, description="an agent whose output this one consumes"
    )
    schedule: Schedule | None = None
    budget: Budget | None = None
    approvals: ApprovalSpec | None = None
    records: int = Field(default=200, ge=1, description="customer records it works on")
    scale: int = Field(
        default=1, ge=1, le=10_000, description="count multiplied by this (``--scale``)"
    )

    def named_ids(self) -> list[str]:
        """The group's agents as written: ``id`` alone, or ``id-00``, ``id-01``, ... The
        timeline names these, and they run through the SDK."""
        return [self.id] if self.count == 1 else [f"{self.id}-{i:02d}" for i in range(self.count)]

    def extra_ids(self) -> list[str]:
        """The agents scaling adds: ``id-00004``, ... (five digits, so never a named id)."""
        return [f"{self.id}-{i:05d}" for i in range(self.count, self.count * self.scale)]

    def ids(self) -> list[str]:
        return self.named_ids() + self.extra_ids()


class Step(_Strict):
    """One timeline entry: a fault or an operator action."""

    at: float = Field(ge=0)
    fault: (
        Literal[
            "outage",
            "latency",
            "runaway",
            "stop",
            "bad_output",
            "release",
            "write_without_permission",
        ]
        | None
    ) = None
    action: Literal["pause", "resume", "rollback", "force_open", "reset"] | None = None
    for_: float | None = Field(default=None, alias="for", gt=0)
    agent: str | None = None
    integration: str | None = None
    breaker: str | None = None
    factor: float = Field(default=4.0, gt=0)
    failure_rate: float = Field(default=0.5, ge=0, le=1)
    mode: Literal["error", "timeout"] = "error"
    latency_ms: float = Field(default=50, ge=0)
    count: int = Field(default=1, ge=1)
    target: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> Step:
        if (self.fault is None) == (self.action is None):
            raise ValueError("give exactly one of fault or action")
        what = self.fault or self.action
        needs = {
            "outage": ("integration",),
            "runaway": ("agent",),
            "stop": ("agent",),
            "bad_output": ("agent",),
            "release": ("agent",),
            "write_without_permission": ("agent", "integration"),
            "pause": ("agent",),
            "resume": ("agent",),
            "rollback": ("agent",),
            "force_open": ("breaker",),
            "reset": ("breaker",),
        }.get(what or "", ())
        for field in needs:
            if getattr(self, field) is None:
                raise ValueError(f"{what} needs {field}")
        if self.fault == "latency" and not (self.agent or self.integration):
            raise ValueError("latency needs agent or integration")
        lasting = ("outage", "latency", "runaway", "stop", "bad_output")
        if self.fault in lasting and self.for_ is None:
            raise ValueError(f"{self.fault} needs for (seconds)")
        return self

    @property
    def what(self) -> str:
        return self.fault or self.action or ""

    @property
    def until(self) -> float:
        return self.at + (self.for_ or 0)

    def describe(self) -> str:
        subject = self.agent or self.integration or self.breaker or ""
        lasting = f" for {self.for_:.0f}s" if self.for_ else ""
        extra = f" ({self.note})" if self.note else ""
        return f"{self.what.replace('_', ' ')} {subject}{lasting}{extra}"


class Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = 7
    duration_s: float = Field(gt=0, le=86400)
    integrations: dict[str, IntegrationSpec]
    agents: tuple[AgentGroup, ...] = Field(min_length=1)
    policy: dict[str, Any] = Field(default_factory=dict)
    timeline: tuple[Step, ...] = ()
    audit: dict[str, str] = Field(
        default_factory=dict, description="the report's audit question: agent, target"
    )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        FleetPolicy.model_validate(self.policy)  # a bad policy fails with the scenario
        ids = [a for g in self.agents for a in g.ids()]
        if len(set(ids)) != len(ids):
            raise ValueError("agent ids repeat: give each group its own id")
        known = set(ids)
        for g in self.agents:
            for t in g.tools:
                if t.integration not in self.integrations:
                    raise ValueError(f"agent {g.id}: unknown integration {t.integration!r}")
            if g.upstream is not None and g.upstream not in known:
                raise ValueError(f"agent {g.id}: unknown upstream {g.upstream!r}")
        for i, s in enumerate(self.timeline):
            if s.agent is not None and s.agent not in known:
                raise ValueError(f"timeline.{i}: unknown agent {s.agent!r}")
            if s.integration is not None and s.integration not in self.integrations:
                raise ValueError(f"timeline.{i}: unknown integration {s.integration!r}")
            if s.at > self.duration_s:
                raise ValueError(f"timeline.{i}: at {s.at} is after duration_s")
        return self

    def group_of(self, agent_id: str) -> AgentGroup:
        return self._groups[agent_id]

    @cached_property
    def _groups(self) -> dict[str, AgentGroup]:
        return {a: g for g in self.agents for a in g.ids()}

    def agent_ids(self) -> list[str]:
        return [a for g in self.agents for a in g.ids()]

    def named_ids(self) -> list[str]:
        """The agents as written in the file (all of them when unscaled)."""
        return [a for g in self.agents for a in g.named_ids()]

    def scaled(self, factor: int) -> Scenario:
        """The same scenario with every agent group ``factor`` times as large. The agents the
        file names keep their names (the timeline, ``upstream`` and the audit question still
        point at them); the added ones are ``<group id>-<n:05d>``.

        Raises:
            ConfigError: ``factor`` is not between 1 and 10,000.
        """
        if not 1 <= factor <= 10_000:
            raise ConfigError(f"scale {factor}: give 1 to 10000", field="scale")
        if factor == 1:
            return self
        groups = [g.model_copy(update={"scale": g.scale * factor}) for g in self.agents]
        return Scenario.model_validate(
            {**self.model_dump(by_alias=True), "agents": [g.model_dump() for g in groups]}
        )


def builtin(name: str) -> Path:
    """A scenario shipped with fleetpulse (``incident``), by name."""
    return Path(__file__).parent / "scenarios" / f"{name}.yaml"


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read a scenario file, or a built-in one by name.

    Raises:
        ConfigError: the file is missing or invalid; the message names the field.
    """
    path = Path(path_or_name)
    if not path.exists() and builtin(str(path_or_name)).exists():
        path = builtin(str(path_or_name))
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"scenario {path}: cannot read it ({exc.strerror}); built-in: incident",
            field="scenario",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"scenario {path}: not valid YAML: {exc}", field="scenario") from None
    try:
        return Scenario.model_validate(raw or {})
    except ValidationError as exc:
        raise invalid(exc, f"scenario {path} is invalid", str(path)) from None
