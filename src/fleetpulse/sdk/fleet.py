"""`Fleet`: what agent code imports to connect and emit task events.

Example:
    >>> from fleetpulse import Fleet
    >>> with Fleet.connect(agent_id="triage", agent_version="3") as fleet:   # doctest: +SKIP
    ...     with fleet.task("triage", input=ticket) as task:
    ...         with task.tool("salesforce", "query", access="read", target="account/42"):
    ...             ...
    ...         task.usage(model="gpt-4o", input_tokens=1200, output_tokens=300)
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fleetpulse.contract.bundles import AgentBundle
from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.errors import EventValidationError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.events.validate import validator
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.contract.policy import Permissions, load_policy
from fleetpulse.sdk.approvals import Approvals
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.guard import Guard
from fleetpulse.sdk.pricing import PriceTable
from fleetpulse.sdk.spool import Spool
from fleetpulse.sdk.task import Task, _name
from fleetpulse.sdk.topic_follower import ControlFollower
from fleetpulse.sdk.transport import KafkaTransport, Transport

if TYPE_CHECKING:
    from fleetpulse.contract.config import SdkSettings

logger = logging.getLogger(__name__)


class Fleet:
    """One agent's connection to fleetpulse. Thread-safe; one per agent process is enough.

    Build it with `Fleet.connect`; the constructor is for tests that inject a transport.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        settings: SdkSettings,
        transport: Transport,
        clock: Clock | None = None,
        prices: PriceTable | None = None,
        validate: bool | None = None,
        guard: Guard | None = None,
        follower: ControlFollower | None = None,
        governance: GovernanceLog | None = None,
        permissions: Permissions | None = None,
    ):
        self.agent_id = _name("agent_id", agent_id)
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.prices = prices or (
            PriceTable.load(settings.price_table) if settings.price_table else PriceTable.default()
        )
        self.topic = settings.topics.task_events
        self._key = agent_id.encode()
        self._encode = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "TaskEvent", self.topic
        )
        # every field the agent supplies is checked where it enters (task, tool, usage); the
        # full schema walk on top costs ~10 us an event, so it is opt-in
        strict = settings.validate_events if validate is None else validate
        self._validate = validator("TaskEvent") if strict else None
        self.transport = transport
        self.guard = guard
        self._follower = follower
        self.governance = governance
        self.permissions = permissions or Permissions()
        self.approvals = Approvals(self) if governance is not None else None
        self.emitted = 0
        self._closed = False

    # -- the active bundle ----------------------------------------------------------------

    @property
    def config(self) -> AgentBundle | None:
        """The agent's active bundle (the ``agent_label`` version, production by default),
        followed live from ``fleetpulse.governance``; None when none is active.

        Example:
            >>> prompt = fleet.config.prompt.format(ticket=text)   # doctest: +SKIP
        """
        if self.governance is None:
            return None
        v = self.governance.state.active(self.agent_id, self.settings.agent_label)
        return v.agent_bundle if v is not None else None

    @property
    def config_version(self) -> int | None:
        if self.governance is None:
            return None
        v = self.governance.state.active(self.agent_id, self.settings.agent_label)
        return v.version if v else None

    @property
    def agent_version(self) -> str:
        """Stamped on every event: the active bundle's version, else the configured one."""
        number = self.config_version
        return str(number) if number is not None else self.settings.agent_version

    @property
    def agent_role(self) -> str:
        return self.role_in(self.config)

    def role_in(self, bundle: AgentBundle | None) -> str:
        """The role under ``bundle`` (the active one): its own, else the configured one."""
        return bundle.role if bundle is not None and bundle.role else self.settings.agent_role

    @classmethod
    def connect(
        cls,
        agent_id: str,
        *,
        agent_version: str | None = None,
        agent_role: str | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> Fleet:
        """Connect an agent. Settings come from ``FLEETPULSE_*`` variables; keyword overrides win.

        Args:
            agent_id: the agent's stable id.
            agent_version: the bundle version stamped on every event.
            agent_role: the role used for least-privilege checks.
            **overrides: any `SdkSettings` field, e.g. ``bootstrap_servers="host:9092"``,
                ``spool_dir=Path(...)``, ``queue_max_messages=10_000``.

        Raises:
            ConfigError: a setting is invalid, or no Kafka is configured or running.
        """
        # loaded on connect, not with `from fleetpulse import Fleet`: pydantic-settings imports
        # asyncio, argparse and email, ~70 ms on our 2-core VM (README "Install")
        from fleetpulse.contract.config import SdkSettings, load_settings  # noqa: PLC0415

        settings = load_settings(
            SdkSettings, agent_version=agent_version, agent_role=agent_role, **overrides
        )
        spool_root = settings.spool_dir or settings.home / "spool"
        spool = Spool.open_instance(Path(spool_root) / _safe(agent_id))
        try:
            config = producer_config(
                settings.resolved_bootstrap(),
                client_id=f"fleetpulse-sdk-{agent_id}@{socket.gethostname()}:{os.getpid()}",
                queue_max_messages=settings.queue_max_messages,
                linger_ms=settings.linger_ms,
                compression=settings.compression,
                message_timeout_ms=settings.message_timeout_ms,
            )
            transport = KafkaTransport(config, spool)
        except BaseException:
            spool.close()
            raise
        permissions = load_policy(settings.policy).access
        guard = follower = governance = None
        if settings.governance:
            governance = GovernanceLog(
                settings.resolved_bootstrap(),
                settings.topics.governance,
                registry_url=settings.schema_registry_url,
                client_id=f"fleetpulse-governance-{agent_id}",
            ).start(wait=False)
        if settings.guard:
            follower = ControlFollower(
                settings.resolved_bootstrap(),
                settings.topics.control,
                client_id=f"fleetpulse-guard-{agent_id}",
            ).start()
            guard = Guard(follower.view)
            if not follower.wait_caught_up(settings.control_catchup_timeout_s):
                logger.warning(
                    "agent %s: the control topic was not read within %.1fs; breakers and "
                    "pauses apply once it is (calls go through until then)",
                    agent_id,
                    settings.control_catchup_timeout_s,
                )
        if governance is not None and not governance.caught_up.wait(
            settings.control_catchup_timeout_s
        ):
            logger.warning(
                "agent %s: the governance topic was not read within %.1fs; the active bundle "
                "applies once it is",
                agent_id,
                settings.control_catchup_timeout_s,
            )
        return cls(
            agent_id,
            settings=settings,
            transport=transport,
            clock=clock,
            guard=guard,
            follower=follower,
            governance=governance,
            permissions=permissions,
        )

    # -- tasks ----------------------------------------------------------------------------

    def task(
        self,
        task_type: str,
        *,
        input: Any = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        trace_id: str | None = None,
        upstream_agent_id: str | None = None,
        attributes: dict[str, str] | None = None,
        wait_if_paused: float | None = None,
    ) -> Task:
        """Measure one task: ``with fleet.task("triage", input=payload) as task: ...``.

        A task started inside another task's block becomes its child (same trace). Pass
        ``upstream_agent_id`` when the input is another agent's output, so cascades can be
        traced to their root cause.

        Raises:
            AgentPausedError: an operator (or the agent's breaker) paused this agent; with
                ``wait_if_paused`` (default: the ``pause_wait_s`` setting) seconds > 0, only
                after waiting that long for a resume.
        """
        if self.guard is not None:
            wait = self.settings.pause_wait_s if wait_if_paused is None else wait_if_paused
            self.guard.check_agent(self.agent_id, wait_s=wait)
        return Task(
            self,
            task_type,
            input=input,
            task_id=task_id,
            parent_task_id=parent_task_id,
            trace_id=trace_id,
            upstream_agent_id=upstream_agent_id,
            attributes=attributes,
        )

    def _emit(self, event: dict[str, Any]) -> None:
        if self._closed:
            raise EventValidationError("fleet", "is closed; events can no longer be emitted")
        if self._validate is not None:
            self._validate(event)
        self.transport.produce(self.topic, self._key, self._encode(event))
        self.emitted += 1

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until Kafka acknowledged every event; return how many are still pending."""
        return self.transport.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, spool whatever Kafka did not take within ``timeout``, and release resources."""
        if not self._closed:
            self._closed = True
            if self._follower is not None:
                self._follower.close()
            if self.governance is not None:
                self.governance.close()
            self.transport.close(timeout)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _safe(agent_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in agent_id)
