"""One agent task and the tool calls inside it: measured, validated, turned into a TaskEvent.

Kept apart from `fleet.py` (connection and transport) so the event building can be unit
tested with a ManualClock and an in-memory transport.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from fleetpulse.contract.errors import (
    AgentPausedError,
    ApprovalDeniedError,
    ApprovalExpiredError,
    CircuitOpenError,
    ConfigError,
    EventValidationError,
    PermissionDeniedError,
)

if TYPE_CHECKING:
    from fleetpulse.contract.bundles import AgentBundle
    from fleetpulse.contract.clock import Clock
    from fleetpulse.contract.governance import Approval
    from fleetpulse.contract.policy import Permissions
    from fleetpulse.sdk.approvals import Approvals
    from fleetpulse.sdk.guard import Guard
    from fleetpulse.sdk.pricing import PriceTable

_current_task: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "fleetpulse_current_task", default=None
)


class TaskHost(Protocol):
    """What a task needs from the agent's ``Fleet`` (which makes it): who runs, under which
    bundle and permissions, the clock, the guards, and where the finished event goes."""

    @property
    def agent_id(self) -> str: ...
    @property
    def agent_version(self) -> str: ...
    @property
    def agent_role(self) -> str: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def config(self) -> AgentBundle | None: ...
    @property
    def guard(self) -> Guard | None: ...
    @property
    def permissions(self) -> Permissions: ...
    @property
    def prices(self) -> PriceTable: ...
    @property
    def approvals(self) -> Approvals | None: ...
    def role_in(self, bundle: AgentBundle | None) -> str: ...
    def _emit(self, event: dict[str, Any]) -> None: ...


OUTCOMES = frozenset({"success", "failure", "timeout", "cancelled", "denied"})
TOOL_STATUSES = frozenset({"ok", "error", "timeout", "denied", "short_circuited"})
ACCESS = frozenset({"read", "write"})


def input_hash(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of a task input (sorted keys, compact, UTF-8).

    Bytes are hashed as they are; any other value must be JSON-serialisable.

    Example:
        >>> input_hash({"b": 1, "a": [1, 2]}) == input_hash({"a": [1, 2], "b": 1})
        True
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        try:
            data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise EventValidationError(
                "input", f"must be JSON-serialisable to be hashed ({exc}); pass bytes instead"
            ) from None
    return hashlib.sha256(data).hexdigest()


def _new_id() -> str:
    """A 128-bit random id as 32 hex chars (4x cheaper than uuid4().hex)."""
    return os.urandom(16).hex()


def current_task() -> Task | None:
    """The task whose ``with`` block we are in, if any (nested tasks link to it)."""
    return _current_task.get()


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise EventValidationError(field, f"must be a non-empty string, got {value!r}")
    return value


def _count(field: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise EventValidationError(field, f"must be a non-negative integer, got {value!r}")
    return value


def _outcome_of(exc: BaseException) -> tuple[str, str]:
    """Map an exception leaving a task to (outcome, error_type)."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | ApprovalExpiredError):
        return "timeout", name
    if isinstance(exc, PermissionDeniedError | AgentPausedError | ApprovalDeniedError):
        return "denied", name
    if isinstance(exc, KeyboardInterrupt) or name == "CancelledError":
        return "cancelled", name
    return "failure", name


class ToolCall:
    """One tool or integration call inside a task; use as a context manager.

    An exception inside the block marks the call ``error`` (``timeout`` for TimeoutError),
    records its type, and propagates. ``mark()`` sets the status by hand, e.g. for an HTTP 500
    that did not raise.
    """

    __slots__ = (
        "_start_perf",
        "_task",
        "access",
        "call_id",
        "cost_micros",
        "error_type",
        "integration",
        "operation",
        "started_at",
        "status",
        "target",
    )

    def __init__(
        self,
        task: Task,
        integration: str,
        operation: str,
        access: str,
        target: str | None,
        cost_micros: int,
    ):
        self._task = task
        self.integration = _name("tool.integration", integration)
        self.operation = _name("tool.operation", operation)
        if access not in ACCESS:
            raise EventValidationError("tool.access", f"must be 'read' or 'write', got {access!r}")
        self.access = access
        if target is not None and not isinstance(target, str):
            raise EventValidationError("tool.target", f"must be a string, got {target!r}")
        self.target = target
        self.cost_micros = _count("tool.cost_micros", cost_micros)
        self.call_id = _new_id()
        self.status = "ok"
        self.error_type: str | None = None
        self.started_at = 0
        self._start_perf = 0

    def mark(self, status: str, error_type: str | None = None) -> None:
        """Set the call's status: ok, error, timeout, denied or short_circuited."""
        if status not in TOOL_STATUSES:
            raise EventValidationError("tool.status", f"must be one of {sorted(TOOL_STATUSES)}")
        self.status = status
        self.error_type = error_type

    def add_cost(self, micros: int) -> None:
        self.cost_micros += _count("tool.cost_micros", micros)

    def __enter__(self) -> ToolCall:
        fleet = self._task._fleet
        clock = fleet.clock
        self.started_at = clock.time_us()
        self._start_perf = clock.perf_ns()
        denied = self._permission_error(fleet)
        if denied is not None:
            # checked before the call: it is not made, and the task records the denial
            self.__exit__(type(denied), denied, None)
            raise denied
        if fleet.guard is not None:
            try:
                fleet.guard.check_tool(fleet.agent_id, self.integration)
            except CircuitOpenError as exc:
                # the call is not made; the task still records that it was short-circuited
                self.__exit__(type(exc), exc, None)
                raise
        return self

    def _permission_error(self, fleet: TaskHost) -> PermissionDeniedError | None:
        """Least privilege: the fleet policy's grants for the agent's role, narrowed by the
        tools its bundle declares; and operations the bundle gates behind an approval."""
        bundle = fleet.config
        role = fleet.role_in(bundle)
        if not fleet.permissions.allows(role, self.integration, self.access) or (
            bundle is not None and not bundle.allows(self.integration, self.operation, self.access)
        ):
            return PermissionDeniedError(fleet.agent_id, role, self.integration, self.access)
        gated = f"{self.integration}.{self.operation}"
        if (
            bundle is not None
            and bundle.needs_approval(self.integration, self.operation)
            and gated not in self._task._approved
        ):
            return PermissionDeniedError(
                fleet.agent_id,
                role,
                self.integration,
                self.access,
                f"{gated} needs a human's approval: call task.require_approval({gated!r}, "
                "summary=...) first",
            )
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        latency_ms = (self._task._fleet.clock.perf_ns() - self._start_perf) / 1e6
        if exc is not None:
            if isinstance(exc, CircuitOpenError):
                self.status = "short_circuited"
            elif isinstance(exc, PermissionDeniedError):
                self.status = "denied"
            elif isinstance(exc, TimeoutError):
                self.status = "timeout"
            else:
                self.status = "error"
            self.error_type = type(exc).__name__
        self._task._tool_calls.append(
            {
                "call_id": self.call_id,
                "integration": self.integration,
                "operation": self.operation,
                "access": self.access,
                "target": self.target,
                "status": self.status,
                "error_type": self.error_type,
                "started_at": self.started_at,
                "latency_ms": latency_ms,
                "cost_micros": self.cost_micros,
            }
        )
        self._task._tool_cost += self.cost_micros

    async def __aenter__(self) -> ToolCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Task:
    """One agent task; use as a (sync or async) context manager from ``fleet.task(...)``.

    Example:
        >>> with fleet.task("triage", input={"ticket": 42}) as task:   # doctest: +SKIP
        ...     with task.tool("salesforce", "query", access="read", target="account/42"):
        ...         account = sf.get(42)
        ...     task.usage(model="gpt-4o", input_tokens=1200, output_tokens=300)
    """

    def __init__(
        self,
        fleet: TaskHost,
        task_type: str,
        *,
        input: Any = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        trace_id: str | None = None,
        upstream_agent_id: str | None = None,
        attributes: dict[str, str] | None = None,
    ):
        self._fleet = fleet
        self.task_type = _name("task_type", task_type)
        self.task_id = task_id or _new_id()
        self.input_hash = input_hash(input)
        parent = current_task() if parent_task_id is None and trace_id is None else None
        self.parent_task_id = parent_task_id or (parent.task_id if parent else None)
        self.trace_id: str = trace_id or (parent.trace_id if parent else self.task_id)
        self.upstream_agent_id = upstream_agent_id
        if upstream_agent_id is not None:
            _name("upstream_agent_id", upstream_agent_id)
        self.attributes: dict[str, str] = {}
        if attributes:
            self.annotate(**attributes)
        self.outcome: str | None = None
        self.error_type: str | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self._model_cost = 0
        self._explicit_cost: int | None = None
        self._price_table_version = ""
        self._tool_calls: list[dict[str, Any]] = []
        self._tool_cost = 0
        self._approved: set[str] = set()
        self._started_at = 0
        self._start_perf = 0
        self._token: contextvars.Token[Task | None] | None = None
        self.event: dict[str, Any] | None = None  # the emitted event, after the block

    # -- inside the block ------------------------------------------------------------------

    def tool(
        self,
        integration: str,
        operation: str,
        *,
        access: str = "read",
        target: str | None = None,
        cost_micros: int = 0,
    ) -> ToolCall:
        """Wrap one integration call: ``with task.tool("gmail", "send", access="write"):``."""
        return ToolCall(self, integration, operation, access, target, cost_micros)

    def usage(
        self,
        *,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        provider: str | None = None,
        cost_micros: int | None = None,
    ) -> None:
        """Record one model call's usage. Cost comes from the price table unless given."""
        _name("usage.model", model)
        i = _count("usage.input_tokens", input_tokens)
        o = _count("usage.output_tokens", output_tokens)
        c = _count("usage.cached_tokens", cached_tokens)
        if c > i:
            raise EventValidationError(
                "usage.cached_tokens", f"({c}) cannot exceed input_tokens ({i})"
            )
        self.model = model
        self.input_tokens += i
        self.output_tokens += o
        self.cached_tokens += c
        table = self._fleet.prices
        found = table.lookup(model)
        self.provider = provider or (found[1].provider if found else None) or self.provider
        if cost_micros is not None:
            self._explicit_cost = (self._explicit_cost or 0) + _count(
                "usage.cost_micros", cost_micros
            )
        else:
            cost = table.cost_micros(model, input_tokens=i, output_tokens=o, cached_tokens=c)
            if cost is not None:
                self._model_cost += cost
                self._price_table_version = table.version

    def require_approval(
        self,
        action: str,
        *,
        summary: str,
        details: dict[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> Approval:
        """Block until a human approves ``action``; the request and its outcome are audited.

        Name gated tool calls ``integration.operation`` (as the bundle's ``approvals`` list
        does): once approved, such calls go through for the rest of this task.

        Example:
            >>> task.require_approval("stripe.refund", summary="refund $420 to acct 42",
            ...                       details={"amount": 420}, timeout=600)   # doctest: +SKIP

        Raises:
            ApprovalDeniedError: an approver said no; ``reason`` says why.
            ApprovalExpiredError: nobody decided within ``timeout`` seconds.
            ConfigError: the SDK does not follow the governance topic (``governance=False``).
        """
        _name("approval.action", action)
        _name("approval.summary", summary)
        approvals = self._fleet.approvals
        if approvals is None:
            raise ConfigError(
                "approvals need the governance topic: connect with governance=True",
                field="governance",
            )
        try:
            approval = approvals.request(
                action,
                summary=summary,
                details=details,
                timeout=timeout,
                task_id=self.task_id,
                trace_id=self.trace_id,
            )
        except (ApprovalDeniedError, ApprovalExpiredError) as exc:
            self.attributes[f"approval:{action}"] = f"{exc.approval_id}:" + (
                "denied" if isinstance(exc, ApprovalDeniedError) else "expired"
            )
            raise
        self.attributes[f"approval:{action}"] = f"{approval.approval_id}:approved"
        self._approved.add(action)
        return approval

    def set_outcome(self, outcome: str, error_type: str | None = None) -> None:
        """Override the outcome (by default: success, or from the exception that left)."""
        if outcome not in OUTCOMES:
            raise EventValidationError("outcome", f"must be one of {sorted(OUTCOMES)}")
        self.outcome = outcome
        self.error_type = error_type

    def annotate(self, **attributes: str) -> None:
        """Attach string labels to the event (customer, team, environment...)."""
        for k, v in attributes.items():
            if not isinstance(v, str):
                raise EventValidationError(f"attributes.{k}", f"must be a string, got {v!r}")
        self.attributes.update(attributes)

    # -- the block -------------------------------------------------------------------------

    def __enter__(self) -> Task:
        clock = self._fleet.clock
        self._started_at = clock.time_us()
        self._start_perf = clock.perf_ns()
        self._token = _current_task.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current_task.reset(self._token)
        clock = self._fleet.clock
        duration_ms = (clock.perf_ns() - self._start_perf) / 1e6
        if exc is not None and self.outcome is None:
            self.outcome, self.error_type = _outcome_of(exc)
        cost = self._explicit_cost if self._explicit_cost is not None else self._model_cost
        self.event = {
            "event_id": _new_id(),
            "agent_id": self._fleet.agent_id,
            "agent_version": self._fleet.agent_version,
            "agent_role": self._fleet.agent_role,
            "task_id": self.task_id,
            "task_type": self.task_type,
            "trace_id": self.trace_id,
            "parent_task_id": self.parent_task_id,
            "upstream_agent_id": self.upstream_agent_id,
            "input_hash": self.input_hash,
            "outcome": self.outcome or "success",
            "error_type": self.error_type,
            "started_at": self._started_at,
            "ended_at": self._started_at + int(duration_ms * 1000),
            "duration_ms": duration_ms,
            "model": self.model,
            "provider": self.provider,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_micros": cost + self._tool_cost,
            "price_table_version": ""
            if self._explicit_cost is not None
            else self._price_table_version,
            "tool_calls": self._tool_calls,
            "attributes": self.attributes,
        }
        self._fleet._emit(self.event)

    async def __aenter__(self) -> Task:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
