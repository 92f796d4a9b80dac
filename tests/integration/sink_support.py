"""Where the sink tests write: embedded chDB in a temp dir, or a database of their own on a
ClickHouse server (clickhouse-connect)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.sink.backend import Backend, ChdbBackend, ServerBackend


@dataclass
class Store:
    kind: str  # "chdb" or "server"
    settings: dict[str, Any]  # SinkSettings fields that point at this store
    env: dict[str, str] = field(default_factory=dict)  # the same, for a CLI subprocess

    @classmethod
    def embedded(cls, path: Path) -> Store:
        return cls("chdb", {"data_dir": path}, {"FLEETPULSE_DATA_DIR": str(path)})

    @classmethod
    def server(cls, url: str, user: str, password: str, database: str) -> Store:
        return cls(
            "server",
            {
                "clickhouse_url": url,
                "clickhouse_user": user,
                "clickhouse_password": password,
                "clickhouse_database": database,
            },
            {
                "FLEETPULSE_CLICKHOUSE_URL": url,
                "FLEETPULSE_CLICKHOUSE_USER": user,
                "FLEETPULSE_CLICKHOUSE_PASSWORD": password,
                "FLEETPULSE_CLICKHOUSE_DATABASE": database,
            },
        )

    @property
    def database(self) -> str:
        return str(self.settings.get("clickhouse_database", "fleetpulse"))

    def backend(self) -> Backend:
        if self.kind == "chdb":
            return ChdbBackend(str(self.settings["data_dir"]))
        s = self.settings
        return ServerBackend(
            s["clickhouse_url"],
            user=s["clickhouse_user"],
            password=s["clickhouse_password"],
            database=s["clickhouse_database"],
        )


def assert_rollups_match(store: Store, events: list[dict[str, Any]]) -> None:
    """The rollups count exactly what the raw tables hold."""
    b = store.backend()
    db = b.database
    try:
        daily = b.rows(
            f"SELECT agent_id, agent_version, tasks, success, failure + timeout AS failed, "
            f"cost_micros, tool_calls FROM {db}.agent_version_daily_v"
        )
        minute = b.rows(f"SELECT agent_id, sum(tasks) AS tasks FROM {db}.agent_minute_v "
                        "GROUP BY agent_id")  # fmt: skip
        calls = b.rows(f"SELECT integration, calls, errors, short_circuited "
                       f"FROM {db}.integration_minute_v")  # fmt: skip
    finally:
        b.close()
    want: dict[tuple[str, str], list[int]] = {}
    want_calls: dict[str, list[int]] = {}
    for ev in events:
        w = want.setdefault((ev["agent_id"], ev["agent_version"]), [0, 0, 0, 0, 0])
        w[0] += 1
        w[1] += ev["outcome"] == "success"
        w[2] += ev["outcome"] in ("failure", "timeout")
        w[3] += ev["cost_micros"]
        w[4] += len(ev["tool_calls"])
        for c in ev["tool_calls"]:
            wc = want_calls.setdefault(c["integration"], [0, 0, 0])
            wc[0] += 1
            wc[1] += c["status"] == "error"
            wc[2] += c["status"] == "short_circuited"
    got: dict[tuple[str, str], list[int]] = {}
    for r in daily:  # one agent's tasks may straddle midnight: sum the days
        g = got.setdefault((r["agent_id"], r["agent_version"]), [0, 0, 0, 0, 0])
        for i, k in enumerate(("tasks", "success", "failed", "cost_micros", "tool_calls")):
            g[i] += int(r[k])
    assert got == want
    per_agent: dict[str, int] = {}
    for (agent, _v), w in want.items():
        per_agent[agent] = per_agent.get(agent, 0) + w[0]
    assert {r["agent_id"]: int(r["tasks"]) for r in minute} == per_agent
    got_calls: dict[str, list[int]] = {}
    for r in calls:
        g = got_calls.setdefault(r["integration"], [0, 0, 0])
        g[0] += int(r["calls"])
        g[1] += int(r["errors"])
        g[2] += int(r["short_circuited"])
    assert got_calls == want_calls
