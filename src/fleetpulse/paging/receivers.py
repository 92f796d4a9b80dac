"""What each receiver is sent for one Alert record (pure payload builders), and the HTTP call.

* Alertmanager API v2: ``POST /api/v2/alerts`` with one alert; a resolved one carries
  ``endsAt``. Alertmanager groups, deduplicates (by label set) and routes it further.
* PagerDuty Events API v2: ``trigger`` / ``resolve`` with our dedup key as PagerDuty's.
* Slack incoming webhook: a message with the summary, value, runbook and scope.
* Generic webhook: the alert as JSON, signed: ``X-Fleetpulse-Signature: sha256=<hex>`` is the
  HMAC-SHA256 of ``<X-Fleetpulse-Timestamp>.<body>`` with the shared secret (the timestamp
  stops replays), plus an ``Idempotency-Key`` that is the same for a redelivered event.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from fleetpulse.paging.config import PagerConfig, ReceiverSpec

_LABEL = re.compile(r"[^A-Za-z0-9_]")


def iso(us: int | None) -> str | None:
    if not us:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def labels_of(alert: dict[str, Any]) -> dict[str, str]:
    """What routes and silences match on: the alert's labels plus its rule, kind, severity."""
    return {
        **alert["labels"],
        "alertname": alert["rule"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "status": alert["status"],
    }


def idempotency_key(alert: dict[str, Any]) -> str:
    raw = f"{alert['dedup_key']}|{alert['status']}|{alert['emitted_at']}"
    return hashlib.sha256(raw.encode()).hexdigest()


def alertmanager(alert: dict[str, Any]) -> list[dict[str, Any]]:
    labels = {_LABEL.sub("_", k): v for k, v in alert["labels"].items() if k != "suppressed"}
    labels.update(
        alertname=alert["rule"],
        dedup_key=alert["dedup_key"],
        severity=alert["severity"],
        kind=alert["kind"],
        scope=alert["scope_id"],
    )
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": alert["summary"],
            "description": alert["description"],
            "runbook": alert["runbook"],
            "runbook_url": alert["runbook_url"],
            "value": f"{alert['value']:g}",
            "threshold": f"{alert['threshold']:g}",
        },
        "startsAt": iso(alert["started_at"]),
    }
    if alert["status"] == "resolved":
        out["endsAt"] = iso(alert["ended_at"] or alert["emitted_at"])
    if alert["runbook_url"]:
        out["generatorURL"] = alert["runbook_url"]
    return [out]


def pagerduty(alert: dict[str, Any], routing_key: str) -> dict[str, Any]:
    if alert["status"] == "resolved":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert["dedup_key"],
        }
    labels = alert["labels"]
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert["dedup_key"],
        "payload": {
            "summary": alert["summary"][:1024] or alert["dedup_key"],
            "source": alert["scope_id"] or "fleetpulse",
            "severity": alert["severity"],  # ours (info, warning, critical) are PagerDuty's
            "timestamp": iso(alert["started_at"]),
            "component": labels.get("agent_id") or labels.get("integration", ""),
            "group": labels.get("team", ""),
            "class": alert["kind"],
            "custom_details": {
                "rule": alert["rule"],
                "value": alert["value"],
                "threshold": alert["threshold"],
                "window_s": alert["window_s"],
                "description": alert["description"],
                "runbook": alert["runbook"],
                "root_cause": alert["root_cause"],
                "labels": labels,
            },
        },
    }
    if alert["runbook_url"]:
        body["links"] = [{"href": alert["runbook_url"], "text": "Runbook"}]
    return body


def slack(alert: dict[str, Any]) -> dict[str, Any]:
    firing = alert["status"] == "firing"
    icon = ":white_check_mark:"
    if firing:
        icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(
            alert["severity"], ":large_blue_circle:"
        )
    head = f"{icon} [{alert['status'].upper()} {alert['severity']}] {alert['summary']}"
    lines = [
        f"*{alert['rule']}* on `{alert['scope_id']}`: value {alert['value']:g}, "
        f"threshold {alert['threshold']:g}"
    ]
    if alert["runbook"]:
        lines.append(f"Runbook: {alert['runbook']}")
    if alert["runbook_url"]:
        lines.append(f"<{alert['runbook_url']}|runbook>")
    return {
        "text": head,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"dedup key `{alert['dedup_key']}`"}],
            },
        ],
    }


def webhook(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        **alert,
        "version": 1,
        "started_at": iso(alert["started_at"]),
        "ended_at": iso(alert["ended_at"]),
        "emitted_at": iso(alert["emitted_at"]),
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class DeliveryError(Exception):
    """A receiver refused or could not be reached; ``retry`` says whether trying again helps."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def send(client: httpx.Client, cfg: PagerConfig, r: ReceiverSpec, alert: dict[str, Any]) -> None:
    """One attempt to deliver ``alert`` to ``r``.

    Raises:
        DeliveryError: 5xx, 429, a timeout or a dropped connection (retry), other 4xx (not).
    """
    if r.file:
        _append_line(r.file.path, orjson.dumps(webhook(alert)))
        return
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(alert)}
    payload: Any
    if r.alertmanager:
        url, payload = r.alertmanager.url.rstrip("/") + "/api/v2/alerts", alertmanager(alert)
    elif r.pagerduty:
        url, payload = r.pagerduty.url, pagerduty(alert, cfg.secret(r.pagerduty.routing_key_env))
    elif r.slack:
        url, payload = cfg.secret(r.slack.webhook_url_env), slack(alert)
    else:
        assert r.webhook is not None
        url, payload = r.webhook.url, webhook(alert)
    body = orjson.dumps(payload)
    if r.webhook and r.webhook.secret_env:
        ts = str(int(time.time()))
        headers["X-Fleetpulse-Timestamp"] = ts
        headers["X-Fleetpulse-Signature"] = sign(cfg.secret(r.webhook.secret_env), ts, body)
    try:
        resp = client.post(url, content=body, headers=headers, timeout=r.timeout_s)
    except httpx.HTTPError as exc:  # refused, reset, timed out: the URL may hold a secret
        raise DeliveryError(f"{r.name}: {type(exc).__name__}", retry=True) from None
    if resp.status_code < 300:
        return
    retry = resp.status_code >= 500 or resp.status_code in (408, 429)
    raise DeliveryError(f"{r.name}: HTTP {resp.status_code} {resp.text[:200]}", retry=retry)


def _append_line(path: Path, line: bytes) -> None:
    """The file receiver: one JSON line per event, appended whole (no torn lines)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(line + b"\n")
    except OSError as exc:
        raise DeliveryError(f"{path}: {exc.strerror}", retry=True) from None
