"""The alert stage of the processors: the alert rules' groups in, Alert lifecycle events on
``fleetpulse.alerts`` out (``fleetpulse processors run`` starts it beside the metric windows and
the breaker stage, in its own process, so its latency never waits behind their backlog).

Alert worker ``FLEETPULSE_ALERTS_INDEX`` of ``FLEETPULSE_ALERTS_WORKERS`` (0 of 1 by default)
owns a deterministic share of the partitions (``split.py`` says who owns what and why), so N
workers do 1/N of the work each and together send exactly the alerts one worker sends. The
share is fixed rather than given by a consumer group: an owner rebuilds its windows from a
replay of hours (a day for budgets), too slow to hand partitions around on every rebalance;
a worker that dies is restarted with its index and resumes its share.

Inputs (assigned directly, no consumer group, nothing committed):

* ``processors.alert-cells``, the partitions it owns: what the rules count, per scope and
  second, for the agents of those partitions (the metric workers decode each task event once
  and send each agent's groups to ``crc32(agent) % partitions``; this stage never reads a task
  event). Their share of the integration and team scopes goes out on
  ``processors.alert-scopes`` to each scope's owner.
* ``processors.alert-scopes``, the partitions it owns: the integration and team scopes it
  evaluates, summed over every agent owner.
* ``processors.alert-state``, every partition (small, compacted): every alert's phase; its
  own pending timers after a restart, and the others' active alerts (cascade roots).
* ``fleetpulse.control``: which integration breakers are OPEN (inhibition).
* ``fleetpulse.governance``: the production bundles' budgets, schedules and approval gates,
  and silences.

State across restarts: the alerts topic is read back at start and each owned alert's newest
event is adopted, so a firing alert is not sent again; pending alerts resume their ``for``
timer from ``processors.alert-state``; the windows are rebuilt by replaying the groups and
scope records of the longest window (and of the current UTC day or month for budgets, as far as
the topics retain them) before the first evaluation. The scope records a replay sends again
are recognised by their source offsets and counted once.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.control_state import ControlView
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.governance import PRODUCTION, GovernanceState
from fleetpulse.contract.kafka_config import consumer_config, producer_config
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.contract.semantics import parse_scope_id
from fleetpulse.processors.alerts.evaluator import FAILURE_KINDS, AlertEvaluator, Context
from fleetpulse.processors.alerts.split import Ownership, ScopeRows, owner_partition, read_phase
from fleetpulse.processors.alerts.windows import US, period_bounds
from fleetpulse.processors.compacted import read_all
from fleetpulse.processors.ingest.cells import AlertGroups
from fleetpulse.processors.loop import StageLoop, partition_count
from fleetpulse.processors.produce import produce
from fleetpulse.sdk.alerts_state import read_alerts
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import ControlFollower

logger = logging.getLogger(__name__)

# a breaker in these states explains failures through its integration (HALF_OPEN still
# short-circuits most calls while it probes)
_OPEN = ("OPEN", "FORCED_OPEN", "HALF_OPEN")


class AlertStage:
    """One alert evaluator. ``run()`` until ``stop_event`` is set."""

    def __init__(
        self,
        settings: ProcessorSettings,
        policy: FleetPolicy,
        *,
        clock: Clock | None = None,
        client_id: str = "fleetpulse-alerts",
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.clock = clock or SystemClock()
        now = self.clock.time_us()
        self.replay_from_us = _replay_from(policy, now)
        # the share is set in start(), once the partition counts are known
        self.evaluator = AlertEvaluator(
            policy, self.clock, since_us=self.replay_from_us, owner=Ownership()
        )
        # from processors.alert-state: the alerts other workers hold active (cascade roots),
        # and this worker's own pending alerts as they were before a restart (until caught up)
        self.remote_active: set[str] = set()
        self._pending: dict[str, tuple[str, int]] = {}  # dedup key -> rule, pending since
        self._scopes_partitions = 1
        self._first_us: int | None = None  # the oldest event replayed: when watching began
        # a breaker that closed moments ago still explains the failures in the rules' windows
        self._hold_us = US * max(
            (r.window_s for r in policy.alerts.rules if r.kind in FAILURE_KINDS), default=0
        )
        self._last_open: dict[str, tuple[str, int]] = {}
        self._encode = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "Alert", self.topics.alerts
        )
        self.producer = Producer(producer_config(self.bootstrap, client_id=client_id, linger_ms=1))
        self.consumer = Consumer(
            {
                **consumer_config(self.bootstrap, settings.alerts_group_id),
                "client.id": client_id,
                "fetch.wait.max.ms": settings.breakers_fetch_wait_ms,
                "enable.auto.commit": False,
            }
        )
        self.control = ControlView()
        self.control_follower = ControlFollower(
            self.bootstrap, self.topics.control, self.control, client_id=f"{client_id}-control"
        )
        self.governance = GovernanceLog(
            self.bootstrap,
            self.topics.governance,
            registry_url=settings.schema_registry_url,
            client_id=f"{client_id}-governance",
        )
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self._ends: dict[tuple[str, int], int] = {}
        self.counters = {"events": 0, "bad": 0, "alerts": 0, "scope_records": 0}
        self._announced: set[str] = set()  # alerts logged as firing

    # -- the loop -------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        """Take this worker's share, adopt its published alert states, follow control and
        governance, and assign its partitions from the start of the replay."""
        t = self.topics
        cells_n = partition_count(self.bootstrap, t.alert_cells)
        self._scopes_partitions = scopes_n = partition_count(self.bootstrap, t.alert_scopes)
        owner = Ownership(
            self.settings.alerts_workers, self.settings.alerts_index, cells_n, scopes_n
        )
        self.evaluator.own(owner)
        restored = self.evaluator.restore(
            read_alerts(self.bootstrap, t.alerts, timeout=timeout).alerts()
        )
        logger.info(
            "alert worker %d of %d: alert-cells %s, alert-scopes %s; %d firing alerts adopted",
            owner.index, owner.workers, list(owner.cells), list(owner.scopes), restored,
        )  # fmt: skip
        self.control_follower.start(timeout=timeout)
        self.governance.start(timeout=timeout)  # waits until the log is read to its end
        # the breaker states must be in too before the first evaluation, or a fresh stage
        # would page alerts that an open breaker inhibits
        if not self.control_follower.wait_caught_up(timeout):
            raise TimeoutError(f"could not read {t.control} within {timeout:g}s")
        self._adopt_ledger(timeout)
        since_ms = self.replay_from_us // 1000
        wanted = [TopicPartition(t.alert_cells, p, since_ms) for p in owner.cells]
        wanted += [TopicPartition(t.alert_scopes, p, since_ms) for p in owner.scopes]
        found = self.consumer.offsets_for_times(wanted, timeout=timeout)
        states_n = partition_count(self.bootstrap, t.alert_state)
        found += [TopicPartition(t.alert_state, p, OFFSET_BEGINNING) for p in range(states_n)]
        start = []
        for tp in found:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
            # nothing since the replay start: the end as it is now, not OFFSET_END (resolved
            # later, it would skip what other workers send in between)
            offset = tp.offset if tp.offset >= 0 else high
            if tp.topic == t.alert_state:
                offset = low
            if 0 <= offset < high:
                self._ends[(tp.topic, tp.partition)] = high
            start.append(TopicPartition(tp.topic, tp.partition, offset))
        self.consumer.assign(start)
        if not self._ends:
            logger.info("alert stage: nothing to replay, evaluating")
            self._caught_up(self.clock.time_us())

    def _adopt_ledger(self, timeout: float) -> None:
        """Take this worker's budget scopes' saved cost totals (``processors.alert-ledger``).
        When the ledger was saved within the rules' longest window, the replay need not reach
        back to the start of the month: it starts where the windows need it, and the costs it
        reads again are not counted twice (``Ledger``)."""
        prefix = f"{self.settings.alerts_group_id}/"
        now = self.clock.time_us()
        ev = self.evaluator
        written, adopted = 0, 0
        for key, value in read_all(self.bootstrap, self.topics.alert_ledger, timeout):
            if not key.startswith(prefix) or not value:
                continue
            sid = key[len(prefix) :]
            try:
                record = orjson.loads(value)
                if sid == _HEARTBEAT:
                    written = max(written, int(record["written_at"]))
                elif self._owns_scope(sid):
                    ev.ledger.adopt(sid, record, now)
                    adopted += 1
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                logger.warning("ignoring ledger record %s: %s", key, exc)
        windows_from = now - self.policy.alerts.lookback_s * US
        if adopted and written >= windows_from + 60 * US:
            self.replay_from_us = max(self.replay_from_us, windows_from)
        logger.info(
            "alert stage: %d budget scopes' cost totals adopted (saved %.0f s ago)",
            adopted,
            (now - written) / US if written else float("nan"),
        )
        ev.ledger.changed.clear()

    def _owns_scope(self, sid: str) -> bool:
        """Whether this worker keeps the ledger of ``sid`` (an agent or a team scope)."""
        owner = self.evaluator.owner
        if owner is None:
            return True
        dims = parse_scope_id(sid)
        if "agent_id" in dims:
            return self.evaluator.owns_agent(dims["agent_id"])
        return owner.owns_scope(sid)

    def _save_ledger(self) -> None:
        """The changed budget scopes' totals, then the heartbeat that says when."""
        ledger = self.evaluator.ledger
        now = self.clock.time_us()
        prefix = self.settings.alerts_group_id
        for sid in sorted(ledger.changed):
            value = orjson.dumps(ledger.record(sid, now))
            produce(self.producer, self.topics.alert_ledger, value, f"{prefix}/{sid}".encode())
        ledger.changed.clear()
        heartbeat = orjson.dumps({"written_at": now})
        key = f"{prefix}/{_HEARTBEAT}".encode()
        produce(self.producer, self.topics.alert_ledger, heartbeat, key)

    def _caught_up(self, first_us: int) -> None:
        """The replay is done: resume the owned alerts' pending timers, start evaluating."""
        resumed = sum(
            self.evaluator.restore_pending(key, rule, since)
            for key, (rule, since) in self._pending.items()
        )
        self._pending.clear()
        if resumed:
            logger.info("alert stage: %d pending alerts resume their for timers", resumed)
        self._watching_from(first_us)
        self.caught_up.set()
        if not gc.isenabled():  # run() paused the collector for the replay
            gc.collect()  # once: what the replay left in cycles (tracebacks) is freed
            gc.freeze()
            gc.enable()

    def _watching_from(self, us: int) -> None:
        """Nothing counts as missed before the first event the stage could see: a fresh topic
        (or a fresh stack) is not a day of missed runs."""
        self.evaluator.since_us = max(self.replay_from_us, us)

    def run(self) -> None:
        self.start()
        if not self.caught_up.is_set():
            # the replay builds windows that live on: collecting while it runs walks an ever
            # larger heap for no cycle (the day's parse took twice as long); they are frozen
            # out of every later collection when it ends (``_caught_up``)
            gc.disable()
        interval = self.settings.alerts_eval_interval_s
        loop = StageLoop(
            "alert stage",
            self.consumer,
            self.producer,
            batch_max=self.settings.processors_batch_max,
            wait_s=min(interval, 0.05),
            eager=True,
            stop_event=self.stop_event,
        )
        loop.every(interval, self._on_timer)
        loop.every(self.settings.alerts_ledger_interval_s, self._on_ledger_timer)
        try:
            loop.run(self.step)
        finally:
            self.close()

    def _on_ledger_timer(self) -> None:
        if self.caught_up.is_set():
            self._save_ledger()

    def _on_timer(self) -> None:
        if self.caught_up.is_set():
            self.evaluate()

    def step(self, msgs: list[Any]) -> None:
        t = self.topics
        ev = self.evaluator
        for m in msgs:
            topic, p, offset = m.topic(), m.partition() or 0, m.offset() or 0
            if topic == t.alert_state:
                self._phase(m)
            elif topic == t.alert_scopes:
                try:
                    ev.ingest_scopes(ScopeRows.from_record(m.value() or b""))
                    self.counters["scope_records"] += 1
                except ValueError as exc:
                    self.counters["bad"] += 1
                    logger.warning("ignoring %s[%d]@%d: %s", topic, p, offset, exc)
            else:
                self._cells(m, p, offset)
            end = self._ends.get((topic, p))
            if end is not None and offset + 1 >= end:
                del self._ends[(topic, p)]
                if not self._ends:
                    logger.info("alert stage: replay done, evaluating")
                    self._caught_up(self._first_us or self.clock.time_us())
        # this worker's agents' share of the integration and team scopes, to their owners
        for sid, value in ev.outbox.records():
            dest = owner_partition(sid, self._scopes_partitions)
            produce(self.producer, t.alert_scopes, value, sid.encode(), partition=dest)

    def _phase(self, m: Any) -> None:
        key = (m.key() or b"").decode(errors="replace")
        found = read_phase(m.value())
        if found is None:  # inactive (a tombstone)
            self.remote_active.discard(key)
            self._pending.pop(key, None)
            return
        rule, phase, since = found
        if not self.evaluator.owns(key, rule):
            self.remote_active.add(key)
        elif not self.caught_up.is_set():  # after that, our own records come back: nothing new
            if phase == "pending":
                self._pending[key] = (rule, since)
            else:
                self._pending.pop(key, None)

    def _cells(self, m: Any, p: int, offset: int) -> None:
        try:
            groups = AlertGroups.from_record(m.value() or b"")
        except ValueError as exc:
            self.counters["bad"] += 1
            logger.warning("ignoring %s[%d]@%d: %s", m.topic(), p, offset, exc)
            return
        self.counters["events"] += groups.events
        self.evaluator.outbox.source = (p, offset)
        self.evaluator.ingest_groups(groups, events=groups.events)
        first = min((runs[0] for _, runs in groups.runs if runs), default=None)
        if self._ends and first is not None:
            self._first_us = first if self._first_us is None else min(self._first_us, first)

    def evaluate(self) -> list[dict[str, Any]]:
        """Refresh the context, run the rules, publish what changed: alerts, then phases."""
        ev = self.evaluator
        ev.context = self._context()
        out = ev.evaluate(self.remote_active)  # others' alerts may root a cascade here
        for alert in out:
            self._publish(alert)
        for key, value in ev.phase_changes.items():
            produce(self.producer, self.topics.alert_state, value, key.encode())
        ev.phase_changes.clear()
        return out

    def _context(self) -> Context:
        now = self.clock.time_us()
        ctx = self.governance.read(lambda s: _governance_context(s, now))
        for rec in self.control.records("breaker"):
            target = rec["target_id"]
            if rec["state"] in _OPEN and target.startswith("integration:"):
                self._last_open[target.removeprefix("integration:")] = (target, now)
        for integration, (target, seen) in list(self._last_open.items()):
            if now - seen <= self._hold_us:
                ctx.open_breakers[integration] = target
            else:
                del self._last_open[integration]
        return ctx

    def _publish(self, alert: dict[str, Any]) -> None:
        self.counters["alerts"] += 1
        quiet = alert["labels"].get("suppressed")
        # one WARNING when an alert starts firing; its repeats and its end are INFO
        key, firing = alert["dedup_key"], alert["status"] == "firing"
        first = firing and key not in self._announced
        if firing:
            self._announced.add(key)
        else:
            self._announced.discard(key)
        log = logger.warning if first and not quiet else logger.info
        log(
            "alert %s %s (%s)%s: %s",
            alert["dedup_key"],
            alert["status"],
            alert["severity"],
            f" [{quiet}: {alert['root_cause']}]" if quiet else "",
            alert["summary"],
        )
        produce(self.producer, self.topics.alerts, self._encode(alert), alert["dedup_key"].encode())
        self.producer.poll(0)

    def close(self, timeout: float = 10.0) -> None:
        gc.enable()  # stopped during a replay
        left = self.producer.flush(timeout)
        if left:
            logger.error("%d alerts were not delivered before close", left)
        self.consumer.close()
        self.control_follower.close()
        self.governance.close()


_HEARTBEAT = "~saved"  # the ledger key saying when a worker group last saved its totals


def _replay_from(policy: FleetPolicy, now_us: int) -> int:
    """How far back the windows need events: the longest window, and the current budget
    periods when a budget rule exists."""
    start = now_us - policy.alerts.lookback_s * US
    for rule in policy.alerts.rules:
        if rule.kind in ("cost_budget", "cost_burn_rate"):
            start = min(start, period_bounds(rule.period, now_us)[0])
    return start


def _governance_context(state: GovernanceState, now_us: int) -> Context:
    ctx = Context(silences=[s for s in state.silences.values() if s.active(now_us)])
    for agent in state.agents:
        bundle = state.active_bundle(agent, PRODUCTION)
        if bundle is None:
            continue
        if bundle.budget is not None:
            ctx.budgets[agent] = bundle.budget
        if bundle.schedule is not None:
            ctx.schedules[agent] = bundle.schedule
        if bundle.approvals:
            ctx.approvals[agent] = tuple(bundle.approvals)
    return ctx


def run_alert_stage(settings: ProcessorSettings, policy: FleetPolicy) -> None:
    """Run the alert stage until SIGTERM/SIGINT."""
    stage = AlertStage(settings, policy)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stage.stop_event.set())
    stage.run()
