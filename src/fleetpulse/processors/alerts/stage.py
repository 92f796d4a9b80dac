"""The alert stage of the processors: the alert rules' groups in, Alert lifecycle events on
``fleetpulse.alerts`` out (``fleetpulse processors run`` starts it beside the metric windows and
the breaker stage, in its own process, so its latency never waits behind their backlog).

Inputs:

* ``processors.alert-cells``, every partition, assigned directly (no consumer group): what the
  rules count, per scope and second, from every ingest pass of the metric workers (they decode
  each task event once; this stage never reads one). The rules see the whole fleet
  (integration scopes, teams, cascades across agents). One alert stage evaluates; a second one
  would send the same events under the same dedup keys, which every receiver deduplicates, so
  it is a hot standby rather than a split of the work.
* ``fleetpulse.control``: which integration breakers are OPEN (inhibition).
* ``fleetpulse.governance``: the production bundles' budgets, schedules and approval gates,
  and silences.

State across restarts: the alerts topic is read back at start and each alert's newest event is
adopted, so a firing alert is not sent again; the windows are rebuilt by replaying the groups
of the longest window (and of the current UTC day or month for budgets, as far as the topic
retains them) before the first evaluation.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.control_state import ControlView
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.governance import PRODUCTION, GovernanceState
from fleetpulse.contract.kafka_config import consumer_config, producer_config
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.processors.alerts.evaluator import FAILURE_KINDS, AlertEvaluator, Context
from fleetpulse.processors.alerts.windows import US, period_bounds
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
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.clock = clock or SystemClock()
        now = self.clock.time_us()
        self.replay_from_us = _replay_from(policy, now)
        self.evaluator = AlertEvaluator(policy, self.clock, since_us=self.replay_from_us)
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
        self._ends: dict[int, int] = {}
        self.counters = {"events": 0, "bad": 0, "alerts": 0}
        self._announced: set[str] = set()  # alerts logged as firing

    # -- the loop -------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        """Adopt the published alert states, follow control and governance, and assign every
        alert-cells partition from the start of the replay."""
        restored = self.evaluator.restore(
            read_alerts(self.bootstrap, self.topics.alerts, timeout=timeout).alerts()
        )
        logger.info("alert stage: %d firing alerts adopted from %s", restored, self.topics.alerts)
        self.control_follower.start(timeout=timeout)
        self.governance.start(timeout=timeout)  # waits until the log is read to its end
        # the breaker states must be in too before the first evaluation, or a fresh stage
        # would page alerts that an open breaker inhibits
        if not self.control_follower.wait_caught_up(timeout):
            raise TimeoutError(f"could not read {self.topics.control} within {timeout:g}s")
        n = partition_count(self.bootstrap, self.topics.alert_cells)
        since_ms = self.replay_from_us // 1000
        wanted = [TopicPartition(self.topics.alert_cells, p, since_ms) for p in range(n)]
        found = self.consumer.offsets_for_times(wanted, timeout=timeout)
        start = []
        for tp in found:
            _, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
            if tp.offset >= 0 and tp.offset < high:
                self._ends[tp.partition] = high
            start.append(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            )
        self.consumer.assign(start)
        if not self._ends:
            logger.info("alert stage: nothing to replay, evaluating")
            self._watching_from(self.clock.time_us())
            self.caught_up.set()

    def _watching_from(self, us: int) -> None:
        """Nothing counts as missed before the first event the stage could see: a fresh topic
        (or a fresh stack) is not a day of missed runs."""
        self.evaluator.since_us = max(self.replay_from_us, us)

    def run(self) -> None:
        self.start()
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
        try:
            loop.run(self.step)
        finally:
            self.close()

    def _on_timer(self) -> None:
        if self.caught_up.is_set():
            self.evaluate()

    def step(self, msgs: list[Any]) -> None:
        ingest = self.evaluator.ingest_groups
        for m in msgs:
            p, offset = m.partition() or 0, m.offset() or 0
            try:
                groups = AlertGroups.from_record(m.value() or b"")
            except ValueError as exc:
                self.counters["bad"] += 1
                logger.warning("ignoring %s[%d]@%d: %s", m.topic(), p, offset, exc)
            else:
                self.counters["events"] += groups.events
                ingest(groups, events=groups.events)
                first = min((runs[0] for _, runs in groups.runs if runs), default=None)
                if self._ends and first is not None:
                    self._first_us = first if self._first_us is None else min(self._first_us, first)
            end = self._ends.get(p)
            if end is not None and offset + 1 >= end:
                del self._ends[p]
                if not self._ends:
                    logger.info("alert stage: replay done, evaluating")
                    self._watching_from(self._first_us or self.clock.time_us())
                    self.caught_up.set()

    def evaluate(self) -> list[dict[str, Any]]:
        """Refresh the context, run the rules, publish what changed."""
        self.evaluator.context = self._context()
        out = self.evaluator.evaluate()
        for alert in out:
            self._publish(alert)
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
        left = self.producer.flush(timeout)
        if left:
            logger.error("%d alerts were not delivered before close", left)
        self.consumer.close()
        self.control_follower.close()
        self.governance.close()


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
