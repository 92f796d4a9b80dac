"""Seeded simulated agents that do their work through the real SDK."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from fleetpulse.sdk.fleet import Fleet

INTEGRATIONS = ("salesforce", "gmail", "postgres", "zendesk", "slack", "stripe")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash")


@dataclass(frozen=True)
class AgentProfile:
    """What one simulated agent does: its tasks, tools, model, and how often it fails."""

    agent_id: str
    task_type: str
    integrations: tuple[str, ...]
    model: str
    failure_rate: float
    version: str = "1"
    role: str = "support"


def standard_profiles(n: int, seed: int = 7) -> list[AgentProfile]:
    rng = random.Random(seed)
    kinds = ("triage", "billing", "outreach", "research", "onboarding", "reporting")
    return [
        AgentProfile(
            agent_id=f"{kinds[i % len(kinds)]}-{i:02d}",
            task_type=kinds[i % len(kinds)],
            integrations=tuple(rng.sample(INTEGRATIONS, 2)),
            model=rng.choice(MODELS),
            failure_rate=rng.choice((0.01, 0.02, 0.05, 0.15)),
            version=str(rng.randint(1, 4)),
        )
        for i in range(n)
    ]


def run_agent(
    fleet: Fleet,
    profile: AgentProfile,
    stop: threading.Event,
    *,
    seed: int,
    attributes: dict[str, str] | None = None,
    max_tasks: int | None = None,
) -> int:
    """Run tasks until `stop` is set (or `max_tasks`); return how many tasks were emitted."""
    rng = random.Random(seed)
    done = 0
    while not stop.is_set() and (max_tasks is None or done < max_tasks):
        customer = rng.randint(1, 500)
        try:
            with fleet.task(
                profile.task_type, input={"customer": customer}, attributes=attributes
            ) as task:
                for integration in profile.integrations:
                    access = "write" if rng.random() < 0.2 else "read"
                    with task.tool(
                        integration, "call", access=access, target=f"customer/{customer}"
                    ):
                        if rng.random() < profile.failure_rate:
                            raise ConnectionError(f"{integration} unavailable")
                task.usage(
                    model=profile.model,
                    input_tokens=rng.randint(200, 4000),
                    output_tokens=rng.randint(50, 800),
                )
        except ConnectionError:
            pass  # recorded on the event as a failure; the agent moves on
        done += 1
    return done
