"""The fleet simulator: a scenario's agents through the real SDK, its timeline of faults and
operator actions, and a simulated approver.

Agents share one producer, one control-topic guard and one governance follower (one process
holding a whole fleet), but each is its own `Fleet` with its own id, clock and active bundle.
A scaled scenario's added agents are not: they are planned in bulk on one thread (`bulk.py`).
Operators act through the control plane's gateway as principals of their role: in-process, or
over the control API when ``api_url`` is given (the demo does that).

Example:
    >>> sim = Simulator(load_scenario("incident"), settings)        # doctest: +SKIP
    >>> result = sim.run(say=print)                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetpulse.contract.config import ControlSettings, SdkSettings, load_settings
from fleetpulse.contract.errors import ConflictError, FleetpulseError
from fleetpulse.contract.policy import load_policy
from fleetpulse.control.client import ControlClient
from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sim.agents import Emitted, SimAgent, SimClock, World
from fleetpulse.sim.bulk import BulkFleet, BulkStats
from fleetpulse.sim.scenario import AgentGroup, Scenario, Step

logger = logging.getLogger(__name__)

Say = Callable[[float, str], None]  # (seconds since the start, what happened)
OPERATORS = {"release": "engineering", "oncall": "operations", "approver": "approver"}


@dataclass
class SimResult:
    """Everything the simulator did and saw, for the report and the tests."""

    scenario: str
    started: float = 0.0
    ended: float = 0.0
    emitted: list[Emitted] = field(default_factory=list)
    breaker_changes: list[tuple[float, str, str]] = field(default_factory=list)
    steps: list[tuple[float, str]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    paused_skips: int = 0
    bulk: BulkStats | None = None  # the extra agents of a scaled scenario (not in `emitted`)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event_ids(self) -> set[str]:
        return {e.event["event_id"] for e in self.emitted}


class Simulator:
    def __init__(
        self,
        scenario: Scenario,
        settings: SdkSettings,
        *,
        api_url: str | None = None,
        tokens: dict[str, str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.api_url = api_url
        self.tokens = tokens or {}
        self.world = World(dict(scenario.integrations))
        self.result = SimResult(scenario.name)
        self.stop = threading.Event()
        self._gateways: dict[str, ControlClient] = {}
        self._plane: tuple[Any, Any, Any] | None = None  # (ControlPlane, settings, log), lazily

    # -- set-up ---------------------------------------------------------------------------

    def gateway(self, who: str) -> ControlClient:
        """The control plane as the scenario's ``who`` (release, oncall, approver)."""
        if who in self._gateways:
            return self._gateways[who]
        # lazy on purpose: the control plane loads when the simulated people first act
        from fleetpulse.control.gateway import HttpGateway  # noqa: PLC0415

        if self.api_url and who in self.tokens:
            gw: ControlClient = HttpGateway(self.api_url, self.tokens[who])
        else:
            gw = self._local(f"sim:{who}", OPERATORS[who])
        self._gateways[who] = gw
        return gw

    def _local(self, name: str, role: str) -> ControlClient:
        # lazy on purpose, as in gateway()
        from fleetpulse.control.access import Caller  # noqa: PLC0415
        from fleetpulse.control.audit import audit_source  # noqa: PLC0415
        from fleetpulse.control.gateway import LocalGateway  # noqa: PLC0415
        from fleetpulse.control.plane import ControlPlane  # noqa: PLC0415
        from fleetpulse.sink.query import running_analyst  # noqa: PLC0415

        if self._plane is None:
            cs = load_settings(
                ControlSettings,
                bootstrap_servers=self.settings.resolved_bootstrap(),
                topic_prefix=self.settings.topic_prefix,
                home=self.settings.home,
                policy=self.settings.policy,
            )
            log = GovernanceLog.open(cs, client_id="fleetpulse-sim")
            self._plane = (ControlPlane(cs, load_policy(cs.policy), log), cs, log)
        plane, cs, log = self._plane
        audit = audit_source(log, cs.clickhouse_database, lambda: running_analyst(cs))
        return LocalGateway(plane, Caller(name, role), audit)

    def enroll(self) -> None:
        """Principals with tokens for the simulated people, who then act over the API."""
        from fleetpulse.control.plane import local_caller  # noqa: PLC0415  (as in gateway)

        gw = self._local(local_caller().name, "engineering")
        for who, role in OPERATORS.items():
            issued = gw.add_principal(f"sim-{who}", role, "")
            self.tokens[who] = issued["token"]

    def publish_bundles(self, say: Say) -> None:
        """Version 1 of every agent's bundle, promoted to production (skipped when the
        production version already has this content)."""
        gw = self.gateway("release")
        named = self.scenario.named_ids()
        for agent_id in named:
            g = self.scenario.group_of(agent_id)
            self._publish(gw, _bundle(agent_id, g, ""), "simulated fleet: initial version")
        say(0.0, f"published and promoted {len(named)} agent bundles")

    def _publish(self, gw: Any, bundle: dict[str, Any], message: str) -> int:
        agent_id = bundle["agent_id"]
        try:
            version = int(gw.publish(bundle, message)["version"])
        except ConflictError:  # the same content is the latest version already
            version = int(gw.history(agent_id)[-1]["version"])
        if gw.labels(agent_id).get("production") != version:
            gw.activate(agent_id, version, "production", message)
        return version

    # -- the run --------------------------------------------------------------------------

    def run(
        self,
        say: Say,
        *,
        on_event: Callable[[Emitted], None] | None = None,
        on_breaker: Callable[[str, str], None] | None = None,
    ) -> SimResult:
        """Run the scenario to its end (or until ``stop`` is set); return what happened.
        ``on_breaker(target_id, state)``: a breaker change, as the agents' SDK saw it."""
        base = Fleet.connect(
            "fleetpulse-sim",
            bootstrap_servers=self.settings.resolved_bootstrap(),
            topic_prefix=self.settings.topic_prefix,
            home=self.settings.home,
            policy=self.settings.policy,
            spool_dir=self.settings.spool_dir,
        )
        assert base.guard is not None
        res = self.result

        def breaker_changed(r: Any) -> None:
            if r["kind"] != "breaker":
                return  # pauses: the timeline says so
            res.breaker_changes.append((time.time(), r["target_id"], r["state"]))
            if on_breaker is not None:
                on_breaker(r["target_id"], r["state"])

        base.guard.view.on_change(breaker_changed)

        def observe(e: Emitted) -> None:
            with res.lock:
                res.emitted.append(e)
            if on_event is not None:
                on_event(e)

        agents = []
        for i, agent_id in enumerate(self.scenario.named_ids()):
            clock = SimClock()
            fleet = Fleet(
                agent_id,
                settings=base.settings,
                transport=base.transport,
                clock=clock,
                guard=base.guard,
                governance=base.governance,
                permissions=base.permissions,
            )
            group = self.scenario.group_of(agent_id)
            seed = self.scenario.seed * 1000 + i
            agents.append(
                SimAgent(agent_id, group, fleet, clock, self.world, seed=seed, observe=observe)
            )
        res.started = time.time()
        threads = [
            threading.Thread(
                target=a.run, args=(self.stop, res.started), name=a.agent_id, daemon=True
            )
            for a in agents
        ]
        threads.append(threading.Thread(target=self._approver, name="approver", daemon=True))
        bulk = None
        if any(g.scale > 1 for g in self.scenario.agents):
            bulk = BulkFleet(self.scenario, self.world, base)
            res.bulk = bulk.stats
            say(0.0, f"{bulk.agents:,} more agents planned in bulk, one producer")
            threads.append(
                threading.Thread(
                    target=bulk.run, args=(self.stop, res.started), name="bulk", daemon=True
                )
            )
        for t in threads:
            t.start()
        try:
            self._timeline(res.started, say)
        finally:
            self.stop.set()
            for t in threads:
                t.join(60)
            res.ended = time.time()
            res.paused_skips = sum(a.paused_skips for a in agents)
            base.close()
            if self._plane is not None:
                self._plane[2].close()
        return res

    def _timeline(self, started: float, say: Say) -> None:
        todo: list[tuple[float, int, Step, bool]] = []
        for i, s in enumerate(self.scenario.timeline):
            todo.append((s.at, i, s, True))
            if s.for_:
                todo.append((s.until, i, s, False))
        todo.sort(key=lambda x: (x[0], x[1], x[3]))
        for at, _, step, begin in todo:
            if self.stop.wait(max(0.0, started + at - time.time())):
                return
            try:
                text = self._apply(step, begin)
            except FleetpulseError as exc:
                text = f"{step.describe()}: FAILED ({exc})"
                logger.warning("timeline step %s failed: %s", step.what, exc)
            self.result.steps.append((time.time() - started, text))
            say(time.time() - started, text)
        self.stop.wait(max(0.0, started + self.scenario.duration_s - time.time()))

    def _apply(self, step: Step, begin: bool) -> str:
        w, what = self.world, step.what
        if not begin:
            if what == "outage":
                w.outages.pop(step.integration or "", None)
                return f"{step.integration} recovered"
            if what == "latency":
                w.slow_agents.pop(step.agent or "", None)
                w.slow_integrations.pop(step.integration or "", None)
            elif what == "runaway":
                w.runaway.pop(step.agent or "", None)
            elif what == "stop":
                w.stopped.discard(step.agent or "")
                return f"{step.agent} runs again"
            elif what == "bad_output":
                w.bad_output.discard(step.agent or "")
            return f"{what.replace('_', ' ')} of {step.agent or step.integration} over"
        if what == "outage":
            w.outages[step.integration or ""] = step
        elif what == "latency":
            if step.agent:
                w.slow_agents[step.agent] = step.factor
            else:
                w.slow_integrations[step.integration or ""] = step.factor
        elif what == "runaway":
            w.runaway[step.agent or ""] = step.factor
        elif what == "stop":
            w.stopped.add(step.agent or "")
        elif what == "bad_output":
            w.bad_output.add(step.agent or "")
        elif what == "release":
            return self._release(step)
        elif what == "write_without_permission":
            with w.lock:
                w.one_shots.setdefault(step.agent or "", []).append(step)
        elif what in ("pause", "resume"):
            self.gateway("oncall").set_paused(
                step.agent or "", what == "pause", step.note or f"simulated operator: {what}"
            )
        elif what == "rollback":
            v = self.gateway("release").rollback(step.agent or "", step.note or "regression")
            return f"rollback {step.agent}: production is version {v.get('version')} again"
        elif what in ("force_open", "reset"):
            self.gateway("oncall").set_breaker(step.breaker or "", what, step.note or what)
        return step.describe()

    def _release(self, step: Step) -> str:
        agent_id = step.agent or ""
        group = self.scenario.group_of(agent_id)
        tag = f"release at {time.strftime('%H:%M:%S')}"
        bundle = _bundle(agent_id, group, f"\nNew prompt ({tag}): be more concise.")
        gw = self.gateway("release")
        version = int(gw.publish(bundle, f"simulated release ({tag})")["version"])
        # the agents behave according to the version the SDK runs, as followed from the log
        self.world.regressed[(agent_id, version)] = step.failure_rate
        gw.activate(agent_id, version, "production", "simulated release")
        return f"release {agent_id} version {version} (it fails {step.failure_rate:.0%} of tasks)"

    def _approver(self) -> None:
        """Decide pending approvals: approve amounts up to the agent's limit, deny the rest."""
        gw = self.gateway("approver")
        while not self.stop.wait(0.3):
            try:
                pending = gw.approvals("pending")
            except FleetpulseError as exc:
                logger.warning("approver: %s", exc)
                continue
            for a in pending:
                spec = self.scenario.group_of(a["agent_id"]).approvals
                amount = int(a["details"].get("amount", 0))
                ok = spec is None or amount <= spec.approve_up_to
                limit = spec.approve_up_to if spec else 0
                reason = "" if ok else f"${amount} is over the ${limit} limit"
                try:
                    gw.decide(a["approval_id"], ok, reason)
                except (ConflictError, FleetpulseError) as exc:
                    logger.info("approver: %s: %s", a["approval_id"], exc)
                    continue
                self.result.decisions.append(
                    {
                        "agent_id": a["agent_id"],
                        "action": a["action"],
                        "amount": amount,
                        "approved": ok,
                    }
                )


def _bundle(agent_id: str, g: AgentGroup, prompt_extra: str) -> dict[str, Any]:
    tools: dict[tuple[str, str], list[str]] = {}
    for t in g.tools:
        tools.setdefault((t.integration, t.access), []).append(t.operation)
    if g.approvals is not None:
        integration, operation = g.approvals.action.split(".", 1)
        tools.setdefault((integration, "write"), []).append(operation)
    bundle: dict[str, Any] = {
        "agent_id": agent_id,
        "description": f"simulated {g.task_type} agent",
        "role": g.role,
        "model": {"name": g.model},
        "prompt": f"You are {agent_id}. Handle the {g.task_type} task: {{input}}{prompt_extra}",
        "tools": [
            {"integration": i, "access": a, "operations": sorted(set(ops))}
            for (i, a), ops in sorted(tools.items())
        ],
        "approvals": [g.approvals.action] if g.approvals else [],
    }
    if g.schedule is not None:
        bundle["schedule"] = g.schedule.model_dump(exclude_defaults=True)
    if g.budget is not None:
        bundle["budget"] = g.budget.model_dump(exclude_none=True)
    return bundle
