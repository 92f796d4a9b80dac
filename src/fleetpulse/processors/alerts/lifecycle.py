"""One alert's lifecycle, Prometheus-style: inactive -> pending (during ``for``) -> firing ->
resolved, with ``keep_firing_for`` against flapping, a re-notify interval and no-data handling.
Pure: the caller passes the condition and the time.

Only firing and resolved go on ``fleetpulse.alerts`` (pending is the rule's own business, as
in Prometheus, whose pending alerts never reach Alertmanager). A firing alert is sent again
when its severity or its suppression changes, and every ``repeat_interval_s``.

Example:
    >>> from fleetpulse.contract.alert_rules import Rule
    >>> rule = Rule(name="r", kind="failure_rate", threshold=0.2, for_s=60)
    >>> s = AlertState("r:agent=a", rule.name)
    >>> c = Condition(True, 0.5, 0.2, "warning", "50% failed")
    >>> step(s, rule, c, now_us=0), step(s, rule, c, now_us=60_000_000)
    (None, 'firing')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetpulse.contract.alert_rules import Rule

US = 1_000_000


@dataclass
class Condition:
    """What a rule found for one scope at one evaluation."""

    active: bool
    value: float
    threshold: float
    severity: str
    summary: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class AlertState:
    dedup_key: str
    rule: str
    phase: str = "inactive"  # inactive, pending, firing
    pending_since: int = 0
    started_at: int = 0
    last_active: int = 0
    last_sent: int = 0
    sent_severity: str = ""
    sent_suppressed: str = ""
    suppressed: str = ""  # "", "inhibited", "grouped", "silenced": set by the evaluator
    root_cause: str | None = None
    last: Condition | None = None  # the newest condition seen (the resolve event reuses it)


def step(state: AlertState, rule: Rule, cond: Condition | None, now_us: int) -> str | None:
    """Advance ``state``; return the status to publish ("firing", "resolved") or None.

    ``cond`` None means no data (too little volume, or no events): ``rule.no_data`` decides
    whether that resolves, keeps the state as it is, or is itself an alert.
    """
    if cond is None:
        if rule.no_data == "keep":
            return None
        if rule.no_data == "alert":
            cond = Condition(True, 0.0, 0.0, rule.severity, f"no data for {state.dedup_key}")
        else:
            cond = Condition(False, 0.0, 0.0, rule.severity, "no data")
    if cond.active:
        state.last = cond
        state.last_active = now_us
        if state.phase == "inactive":
            state.phase, state.pending_since = "pending", now_us
        if state.phase == "pending":
            if now_us - state.pending_since < rule.for_s * US:
                return None
            state.phase, state.started_at = "firing", state.pending_since
            return _sent(state, now_us)
        changed = cond.severity != state.sent_severity or state.suppressed != state.sent_suppressed
        if changed or now_us - state.last_sent >= rule.repeat_interval_s * US:
            return _sent(state, now_us)
        return None
    if state.phase == "pending":
        state.phase = "inactive"
        return None
    if state.phase == "firing" and now_us - state.last_active >= rule.keep_firing_for_s * US:
        state.phase = "inactive"
        if state.last is not None:  # the resolve event reports the value that cleared it
            state.last = Condition(
                False,
                cond.value,
                cond.threshold,
                state.last.severity,
                state.last.summary,
                cond.summary if cond.summary != "no data" else "no data",
                state.last.labels,
            )
        return "resolved"
    return None


def _sent(state: AlertState, now_us: int) -> str:
    state.last_sent = now_us
    state.sent_severity = state.last.severity if state.last else ""
    state.sent_suppressed = state.suppressed
    return "firing"


def restore(state: AlertState, event: dict[str, object]) -> None:
    """Adopt the newest published event of this alert (read back from the alerts topic at
    start), so a restart neither re-pages a firing alert nor forgets to resolve it."""
    if event.get("status") != "firing":
        return
    emitted = int(event.get("emitted_at") or 0)  # type: ignore[call-overload]
    labels = event.get("labels") or {}
    assert isinstance(labels, dict)
    state.phase = "firing"
    state.started_at = state.pending_since = int(event.get("started_at") or 0)  # type: ignore[call-overload]
    state.last_active = state.last_sent = emitted
    state.sent_severity = str(event.get("severity") or "")
    state.suppressed = state.sent_suppressed = str(labels.get("suppressed", ""))
    state.root_cause = event.get("root_cause")  # type: ignore[assignment]
    state.last = Condition(
        True,
        float(event.get("value") or 0.0),  # type: ignore[arg-type]
        float(event.get("threshold") or 0.0),  # type: ignore[arg-type]
        state.sent_severity,
        str(event.get("summary") or ""),
        str(event.get("description") or ""),
        {k: str(v) for k, v in labels.items() if k != "suppressed"},
    )
