"""Alert rules: the ``alerts:`` section of the fleet policy, validated at start.

Example policy section::

    alerts:
      teams:                          # cost per team; an agent belongs to the first team matching
        support: {agents: ["triage", "refund-*"], daily_usd: 200, monthly_usd: 4000}
      budgets:                        # per agent (an agent bundle's `budget:` wins)
        triage: {daily_usd: 50, monthly_usd: 1000}
      schedules:                      # per agent (an agent bundle's `schedule:` wins)
        nightly-report: {cron: "0 2 * * *", grace_s: 900, timezone: Europe/Paris}
      rules:
        - name: agent-failure-rate
          kind: failure_rate          # see KINDS
          scope: agent                # agent | agent_task_type (the kind's first scope if unset)
          match: {agent_id: "triage*"}   # glob per label: agent_id, task_type, integration, team
          window_s: 300
          threshold: 0.2              # warning at 20% failed tasks ...
          critical: 0.5               # ... critical at 50% (optional)
          min_volume: 20              # fewer tasks in the window: no data
          for_s: 60                   # pending this long before firing
          keep_firing_for_s: 120      # condition gone this long before resolving (flapping)
          repeat_interval_s: 14400    # a still-firing alert is sent again this often
          no_data: resolve            # resolve | keep | alert
          labels: {team: support}
          runbook: "Check the agent's recent errors: fleetpulse report agent {agent_id}"
          runbook_url: https://wiki.example.com/runbooks/agent-failure-rate

With no ``rules:`` the defaults below (``DEFAULT_RULES``) apply; ``rules: []`` turns alerting off.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetpulse.contract.schedule import Budget, Schedule

Kind = Literal[
    "failure_rate",
    "latency_p95",
    "latency_degradation",
    "cost_budget",
    "cost_burn_rate",
    "integration_error_rate",
    "schedule",
    "version_regression",
    "policy_violation",
]
Scope = Literal[
    "agent", "agent_task_type", "agent_version", "integration", "agent_integration", "team"
]
Severity = Literal["info", "warning", "critical"]

# kind -> the scopes it may be evaluated on (the first is the default)
KINDS: dict[str, tuple[str, ...]] = {
    "failure_rate": ("agent", "agent_task_type"),
    "latency_p95": ("agent", "agent_task_type"),
    "latency_degradation": ("agent", "agent_task_type"),
    "cost_budget": ("agent", "team"),
    "cost_burn_rate": ("agent", "team"),
    "integration_error_rate": ("integration", "agent_integration"),
    "schedule": ("agent",),
    "version_regression": ("agent",),
    "policy_violation": ("agent_integration",),
}
# what ``threshold`` means when it is not given
DEFAULT_THRESHOLDS = {
    "cost_budget": 0.8,  # fraction of the budget spent
    "cost_burn_rate": 1.0,  # projected spend / budget at the end of the period
    "schedule": 2.0,  # too_often: runs / expected runs
    "version_regression": 0.05,  # failure rate increase (absolute)
    "policy_violation": 1.0,  # violations in the window
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def labels_match(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every ``label: glob`` matcher matches (a missing label fails). Rule selectors,
    silences and the pager's routes all match this way.

    Example:
        >>> labels_match({"agent_id": "triage*"}, {"agent_id": "triage-eu", "team": "s"})
        True
    """
    return all(k in labels and fnmatch.fnmatchcase(labels[k], g) for k, g in matchers.items())


class Rule(BaseModel):
    """One alert rule; the kind-specific fields are ignored by other kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str
    kind: Kind
    scope: Scope | None = None
    match: dict[str, str] = Field(default_factory=dict)
    window_s: int = Field(default=300, ge=1, le=86400 * 31)
    threshold: float | None = Field(default=None, ge=0)
    critical: float | None = Field(default=None, ge=0)
    min_volume: int = Field(default=20, ge=0)
    for_s: float = Field(default=0, ge=0)
    keep_firing_for_s: float = Field(default=0, ge=0)
    repeat_interval_s: float = Field(default=4 * 3600, gt=0)
    no_data: Literal["resolve", "keep", "alert"] = "resolve"
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    runbook: str = ""
    runbook_url: str = ""
    # latency_degradation: the baseline window the recent one is compared with
    baseline_s: int = Field(default=86400, ge=60, le=86400 * 7)
    # cost_budget, cost_burn_rate
    period: Literal["day", "month"] = "day"
    # version_regression: significance of the failure-rate increase (two-proportion z), and the
    # p95 ratio that counts as a latency regression
    z: float = Field(default=2.58, ge=0)
    latency_ratio: float = Field(default=1.5, gt=1)
    # policy_violation: which violations count
    violation: Literal["denied", "unpermitted", "unapproved"] = "unpermitted"
    actions: tuple[str, ...] = Field(
        default=(), description="unapproved: integration.operation globs that need an approval"
    )
    # schedule: tasks closer than this belong to one run
    run_gap_s: float = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits, - and _")
        scopes = KINDS[self.kind]
        if self.scope is not None and self.scope not in scopes:
            raise ValueError(
                f"kind {self.kind} is evaluated per {' or '.join(scopes)}, not {self.scope}"
            )
        if self.threshold is None and self.kind not in DEFAULT_THRESHOLDS:
            raise ValueError(f"kind {self.kind} needs a threshold")
        if self.kind == "latency_degradation":
            if self.baseline_s <= self.window_s:
                raise ValueError("baseline_s must be longer than window_s")
            if (self.threshold or 0) <= 1:
                raise ValueError("latency_degradation's threshold is a ratio of p95s, above 1")
        if self.critical is not None and self.critical < self.limit:
            raise ValueError(f"critical ({self.critical}) is below threshold ({self.limit})")
        return self

    @property
    def scope_type(self) -> str:
        return self.scope or KINDS[self.kind][0]

    @property
    def limit(self) -> float:
        """The threshold, or the kind's default."""
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.kind]

    def matches(self, dims: dict[str, str]) -> bool:
        return labels_match(self.match, dims)

    def severity_for(self, value: float) -> Severity:
        if self.critical is not None and value >= self.critical:
            return "critical"
        return self.severity


class Team(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    agents: tuple[str, ...] = Field(min_length=1, description="agent id globs")
    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"name": "agent-failure-rate", "kind": "failure_rate", "threshold": 0.2, "critical": 0.5,
     "for_s": 60, "keep_firing_for_s": 120,
     "runbook": "See what fails: fleetpulse report agent {agent_id}"},
    {"name": "agent-latency-degradation", "kind": "latency_degradation", "window_s": 900,
     "threshold": 2.0, "min_volume": 50, "for_s": 300,
     "runbook": "p95 doubled against the last 24 h: check the model provider and integrations"},
    {"name": "integration-error-rate", "kind": "integration_error_rate", "threshold": 0.25,
     "critical": 0.5, "for_s": 30, "keep_firing_for_s": 120,
     "runbook": "fleetpulse breakers list; fleetpulse report integration {integration}"},
    {"name": "agent-daily-budget", "kind": "cost_budget", "threshold": 0.8, "critical": 1.0,
     "min_volume": 0, "runbook": "Near the daily budget: fleetpulse report agent {agent_id}"},
    {"name": "agent-daily-burn-rate", "kind": "cost_burn_rate", "window_s": 3600,
     "threshold": 1.0, "min_volume": 5, "for_s": 300,
     "runbook": "At this rate the daily budget runs out before midnight UTC"},
    {"name": "agent-schedule", "kind": "schedule", "window_s": 3600, "min_volume": 0,
     "runbook": "The agent did not run as scheduled: check its scheduler and pauses"},
    {"name": "version-regression", "kind": "version_regression", "window_s": 3600,
     "min_volume": 50, "severity": "critical",
     "runbook": "Roll back: fleetpulse agents rollback {agent_id}"},
    {"name": "denied-calls", "kind": "policy_violation", "violation": "denied",
     "window_s": 600, "threshold": 1, "min_volume": 0, "severity": "warning",
     "runbook": "Calls its role is not granted: fleetpulse audit --agent {agent_id}"},
    {"name": "unpermitted-calls", "kind": "policy_violation", "violation": "unpermitted",
     "window_s": 600, "threshold": 1, "min_volume": 0, "severity": "critical",
     "runbook": "A call outside the role's grants went through (the guard was bypassed): "
                "fleetpulse agents pause {agent_id} --reason 'unpermitted call'"},
    {"name": "unapproved-actions", "kind": "policy_violation", "violation": "unapproved",
     "window_s": 600, "threshold": 1, "min_volume": 0, "severity": "critical",
     "runbook": "A gated action ran unapproved: fleetpulse audit --agent {agent_id}"},
)  # fmt: skip


class AlertsSection(BaseModel):
    """The ``alerts:`` section of the fleet policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    rules: tuple[Rule, ...] = Field(default_factory=lambda: tuple(Rule(**r) for r in DEFAULT_RULES))
    teams: dict[str, Team] = Field(default_factory=dict)
    budgets: dict[str, Budget] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> AlertsSection:
        seen: set[str] = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"two rules are named {r.name!r}; names make the dedup keys")
            seen.add(r.name)
        return self

    def team_of(self, agent_id: str) -> str | None:
        for name, team in self.teams.items():
            if any(fnmatch.fnmatchcase(agent_id, g) for g in team.agents):
                return name
        return None

    @cached_property
    def windows(self) -> dict[str, set[int]]:
        """scope type -> the window lengths some rule reads (what the evaluator keeps)."""
        out: dict[str, set[int]] = {}
        for r in self.rules:
            if r.kind in ("cost_budget", "schedule"):
                continue  # calendar ledgers and run lists, not rolling windows
            need = out.setdefault(
                r.scope_type if r.kind != "version_regression" else "agent_version", set()
            )
            need.add(r.window_s)
            if r.kind == "latency_degradation":
                need.add(r.baseline_s)
        return out

    @cached_property
    def lookback_s(self) -> int:
        """How much history the evaluator replays at start to rebuild its windows."""
        longest = max((w for ws in self.windows.values() for w in ws), default=0)
        return longest + 60
