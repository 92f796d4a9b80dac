"""The paging bridge on the real broker: payloads checked field by field against a local HTTP
receiver (PagerDuty, Slack, a signed webhook), retries on 500 and on a dropped connection, the
DLQ for a receiver that refuses for good, suppressed alerts not paged, offsets committed; and
end to end with a real Alertmanager (Debian's prometheus-alertmanager) when it is installed."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer, TopicPartition

from fleetpulse.contract.config import PagerSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack.kafka import free_port
from fleetpulse.paging import PagerBridge, load_pager_config

from .helpers import consumer_from_start, running, wait_for

US = 1_000_000


class Receiver(ThreadingHTTPServer):
    """Records every request per path; ``faults[path]`` scripts the first answers."""

    def __init__(self) -> None:
        self.requests: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.faults: dict[str, list[str]] = {}
        self.attempts: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path
        self.server.attempts[path] = self.server.attempts.get(path, 0) + 1
        fault = self.server.faults.get(path, [])
        if fault:
            what = fault.pop(0)
            if what == "drop":
                self.connection.shutdown(2)  # the connection dies mid-request
                return
            self.send_response(int(what))
            self.end_headers()
            self.wfile.write(b"nope")
            return
        self.server.requests.setdefault(path, []).append((dict(self.headers), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def alert(key: str, status: str = "firing", **kw: Any) -> dict[str, Any]:
    now = int(time.time() * US)
    a = {
        "dedup_key": key, "rule": "fail", "kind": "failure_rate", "status": status,
        "severity": "critical", "scope_type": "agent", "scope_id": "agent=billing",
        "value": 0.75, "threshold": 0.5, "window_s": 60, "summary": "75% of tasks failed",
        "description": "d", "runbook": "fleetpulse report agent billing",
        "runbook_url": "https://wiki.example.com/rb", "labels": {"agent_id": "billing", "team": "pay"},
        "root_cause": None, "started_at": now - 60 * US,
        "ended_at": now if status == "resolved" else None, "emitted_at": now,
    }  # fmt: skip
    a.update(kw)
    return a


def produce(bootstrap: str, topic: str, alerts: list[dict[str, Any] | bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    codec = AvroCodec()
    for a in alerts:
        value = a if isinstance(a, bytes) else codec.encode("Alert", a)
        key = b"junk" if isinstance(a, bytes) else a["dedup_key"].encode()
        p.produce(topic, value, key)
    p.flush(10)


@pytest.fixture
def settings(kafka: Any, fresh_prefix: Topics) -> PagerSettings:
    return PagerSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=fresh_prefix.prefix,
        pager_group=f"g-{uuid.uuid4().hex[:6]}",
    )


def bridge(settings: PagerSettings, config_path: Path, env: dict[str, str]) -> Any:
    return running(PagerBridge(settings, load_pager_config(config_path, env)))


def test_payloads_retries_dlq_and_commits(
    kafka: Any, fresh_prefix: Topics, tmp_path: Path, receiver: Receiver, settings: PagerSettings
) -> None:
    cfg = tmp_path / "pager.yaml"
    cfg.write_text(f"""
receivers:
  - {{name: pd, pagerduty: {{routing_key_env: PD_KEY, url: "{receiver.url}/pd"}}}}
  - {{name: chat, slack: {{webhook_url_env: SLACK_URL}}}}
  - {{name: hook, webhook: {{url: "{receiver.url}/hook", secret_env: HOOK_SECRET}}}}
  - {{name: broken, webhook: {{url: "{receiver.url}/broken"}}}}
routes:
  - {{match: {{team: pay}}, receivers: [pd, chat, hook]}}
  - {{match: {{team: legacy}}, receivers: [broken]}}
retry: {{attempts: 4, initial_s: 0.01, max_s: 0.05}}
""")
    env = {"PD_KEY": "R0UTINGKEY", "SLACK_URL": f"{receiver.url}/slack", "HOOK_SECRET": "s3cret"}
    receiver.faults = {"/pd": ["500"], "/hook": ["drop"], "/broken": ["400"]}
    firing, resolved = alert("fail:agent=billing"), alert("fail:agent=billing", "resolved")
    quiet = alert(
        "fail:agent=down",
        labels={"team": "pay", "suppressed": "grouped"},
        root_cause="fail:agent=billing",
    )
    legacy = alert("fail:agent=old", labels={"team": "legacy"})
    produce(
        kafka.bootstrap_servers, fresh_prefix.alerts, [firing, quiet, b"not avro", legacy, resolved]
    )
    with bridge(settings, cfg, env) as b:
        wait_for(
            lambda: (
                len(receiver.requests.get("/hook", [])) == 2
                and len(receiver.requests.get("/pd", [])) == 2
            ),
            "delivery",
        )
        wait_for(lambda: b.counters["dead_lettered"] == 2, "two dead letters")
        time.sleep(0.5)
    # retried: one 500 and one dropped connection, each followed by a success
    assert receiver.attempts["/pd"] == 3 and receiver.attempts["/hook"] == 3
    assert receiver.attempts["/broken"] == 1  # a 400 is final: no retry, straight to the DLQ
    # PagerDuty Events v2
    (_, trig), (_, res) = receiver.requests["/pd"]
    trig_j, res_j = json.loads(trig), json.loads(res)
    assert res_j == {
        "routing_key": "R0UTINGKEY",
        "event_action": "resolve",
        "dedup_key": "fail:agent=billing",
    }
    assert {k: trig_j[k] for k in ("routing_key", "event_action", "dedup_key")} == {
        "routing_key": "R0UTINGKEY",
        "event_action": "trigger",
        "dedup_key": "fail:agent=billing",
    }
    p = trig_j["payload"]
    assert (p["summary"], p["source"], p["severity"], p["component"], p["group"], p["class"]) == (
        "75% of tasks failed",
        "agent=billing",
        "critical",
        "billing",
        "pay",
        "failure_rate",
    )
    assert p["custom_details"]["value"] == 0.75 and p["custom_details"]["threshold"] == 0.5
    assert p["custom_details"]["runbook"] == "fleetpulse report agent billing"
    assert trig_j["links"] == [{"href": "https://wiki.example.com/rb", "text": "Runbook"}]
    # Slack
    texts = [json.loads(body)["text"] for _, body in receiver.requests["/slack"]]
    assert texts[0].startswith(":red_circle: [FIRING critical] 75% of tasks failed")
    assert texts[1].startswith(":white_check_mark: [RESOLVED critical]")
    # the signed webhook
    for (headers, body), status in zip(
        receiver.requests["/hook"], ("firing", "resolved"), strict=True
    ):
        ts = headers["X-Fleetpulse-Timestamp"]
        want = hmac.new(b"s3cret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Fleetpulse-Signature"] == f"sha256={want}"
        doc = json.loads(body)
        assert (doc["dedup_key"], doc["status"], doc["version"]) == (
            "fail:agent=billing",
            status,
            1,
        )
        assert (
            headers["Idempotency-Key"]
            == hashlib.sha256(
                f"{doc['dedup_key']}|{status}|{(firing if status == 'firing' else resolved)['emitted_at']}".encode()
            ).hexdigest()
        )
    # the grouped alert was not paged anywhere
    assert not any(
        b"fail:agent=down" in body for reqs in receiver.requests.values() for _, body in reqs
    )
    # the DLQ holds the undecodable record and the refused one, with reasons
    dlq = consumer_from_start(kafka.bootstrap_servers, fresh_prefix.dlq)
    records = dlq.consume(10, 5)
    dlq.close()
    reasons = sorted(dict(m.headers())["fleetpulse.reason"].decode() for m in records)
    assert len(reasons) == 2 and "HTTP 400" in reasons[0] and "broken" in reasons[0]
    assert "Alert" in reasons[1] or "decode" in reasons[1].lower() or "avro" in reasons[1].lower()
    # every record is committed: a restarted bridge has nothing left to send
    from confluent_kafka import Consumer

    c = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": settings.pager_group_id}
    )
    committed = c.committed([TopicPartition(fresh_prefix.alerts, p) for p in range(3)], timeout=10)
    c.close()
    assert sum(max(tp.offset, 0) for tp in committed) == 5


def test_a_redelivered_event_is_not_sent_twice(
    kafka: Any, fresh_prefix: Topics, tmp_path: Path, receiver: Receiver, settings: PagerSettings
) -> None:
    cfg = tmp_path / "pager.yaml"
    cfg.write_text(
        f'receivers: [{{name: hook, webhook: {{url: "{receiver.url}/hook"}}}}]\ndefault_receivers: [hook]\n'
    )
    a = alert("k")
    produce(kafka.bootstrap_servers, fresh_prefix.alerts, [a, a])  # the same event twice
    with bridge(settings, cfg, {}) as b:
        wait_for(
            lambda: b.counters["delivered"] == 1 and receiver.attempts.get("/hook") == 1,
            "one delivery",
        )
        time.sleep(0.5)
    assert len(receiver.requests["/hook"]) == 1


AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.mark.skipif(
    AM is None,
    reason="prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)",
)
def test_alertmanager_end_to_end(
    kafka: Any, fresh_prefix: Topics, tmp_path: Path, settings: PagerSettings
) -> None:
    port = free_port()
    (tmp_path / "am.yml").write_text(
        "global: {resolve_timeout: 24h}\nroute: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n"
    )
    am = subprocess.Popen(
        [str(AM), f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=(tmp_path / "am.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{url}/-/ready"), "Alertmanager is ready")
        cfg = tmp_path / "pager.yaml"
        cfg.write_text(
            f'receivers: [{{name: am, alertmanager: {{url: "{url}"}}}}]\ndefault_receivers: [am]\n'
        )
        firing = alert("fail:agent=billing")
        with bridge(settings, cfg, {}):
            produce(kafka.bootstrap_servers, fresh_prefix.alerts, [firing])
            wait_for(lambda: _am_alerts(url), "the alert is in Alertmanager")
            got = _am_alerts(url)[0]
            assert {
                k: got["labels"][k]
                for k in ("alertname", "dedup_key", "severity", "agent_id", "team", "kind", "scope")
            } == {
                "alertname": "fail",
                "dedup_key": "fail:agent=billing",
                "severity": "critical",
                "agent_id": "billing",
                "team": "pay",
                "kind": "failure_rate",
                "scope": "agent=billing",
            }
            assert got["annotations"]["summary"] == "75% of tasks failed"
            assert got["annotations"]["runbook"] == "fleetpulse report agent billing"
            assert got["status"]["state"] == "active"
            resolved = alert("fail:agent=billing", "resolved", started_at=firing["started_at"])
            produce(kafka.bootstrap_servers, fresh_prefix.alerts, [resolved])
            wait_for(
                lambda: not _am_alerts(url, active_only=True), "the alert ends in Alertmanager"
            )
    finally:
        am.terminate()
        am.wait(10)


def _ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def _am_alerts(url: str, active_only: bool = False) -> list[dict[str, Any]]:
    found = httpx.get(f"{url}/api/v2/alerts", timeout=2).json()
    now = time.time()
    if active_only:  # a resolved alert either leaves the list or carries an endsAt in the past
        found = [a for a in found if _ts(a["endsAt"]) > now]
    return found


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
