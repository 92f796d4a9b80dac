"""`fleetpulse sim run --scale N` against the real broker: a small scenario scaled 25 times
runs for a few seconds; every event it produced arrives exactly once, the named agents run
through the SDK under their own names, and the added agents' events come from the bulk
producer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleetpulse.contract.config import SdkSettings, load_settings
from fleetpulse.contract.topics import Topics
from fleetpulse.sim.runner import Simulator
from fleetpulse.sim.scenario import Scenario

from .helpers import read_all

SCENARIO: dict[str, Any] = {
    "name": "scaled",
    "seed": 3,
    "duration_s": 4,
    "integrations": {"crm": {"latency_ms": 80, "error_rate": 0.05}},
    "agents": [
        {"id": "front", "task_type": "triage", "rate": 2, "tools": [{"integration": "crm"}]},
        {"id": "back", "count": 2, "task_type": "sync", "rate": 1, "upstream": "front"},
    ],
    "policy": {"permissions": {"default": {"crm": ["read"]}}},
    "timeline": [{"at": 1, "fault": "latency", "agent": "back-01", "factor": 3, "for": 2}],
}


def test_a_scaled_scenario_produces_every_agents_events(
    kafka: Any, fresh_prefix: Topics, tmp_path: Path
) -> None:
    sc = Scenario.model_validate(SCENARIO).scaled(25)  # 1 + 24 front, 2 + 48 back
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(sc.policy))
    settings = load_settings(
        SdkSettings,
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=fresh_prefix.prefix,
        home=tmp_path,
        policy=policy,
    )
    sim = Simulator(sc, settings)
    steps: list[str] = []
    sim.publish_bundles(lambda t, text: steps.append(text))
    result = sim.run(lambda t, text: steps.append(text))

    assert result.bulk is not None and result.bulk.events > 300  # ~125 tasks/s for 4 s
    sdk_ids = result.event_ids()
    expected = len(sdk_ids) + result.bulk.events
    events = read_all(kafka.bootstrap_servers, fresh_prefix.task_events, expected, timeout=60)
    assert len(events) == expected
    assert len({e["event_id"] for e in events}) == expected  # once each
    by_agent: dict[str, int] = {}
    for e in events:
        by_agent[e["agent_id"]] = by_agent.get(e["agent_id"], 0) + 1
    named = {"front", "back-00", "back-01"}
    assert named <= by_agent.keys()  # the named agents, through the SDK, keep their names
    assert {e["agent_id"] for e in events if e["event_id"] in sdk_ids} <= named
    added = set(sc.agent_ids()) - named
    assert by_agent.keys() - named <= added
    assert len(by_agent.keys() & added) > 40  # the load is spread over the added agents
    backs = [e for e in events if e["task_type"] == "sync"]
    assert backs and all(e["upstream_agent_id"] == "front" for e in backs)
    assert any("latency back-01" in s for s in steps)  # the timeline still names its agent
