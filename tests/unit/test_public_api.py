"""The names users import are pinned: changing them is a breaking change."""

from __future__ import annotations

import importlib

import pytest

import fleetpulse

PUBLIC = {
    "fleetpulse": {
        "AgentPausedError",
        "ApprovalDeniedError",
        "ApprovalExpiredError",
        "CircuitOpenError",
        "ConfigError",
        "EventValidationError",
        "Fleet",
        "FleetpulseError",
        "PermissionDeniedError",
        "__version__",
    },
    "fleetpulse.sdk": {
        "Fleet",
        "Guard",
        "KafkaTransport",
        "PriceTable",
        "Spool",
        "Task",
        "ToolCall",
        "Transport",
        "current_task",
        "input_hash",
    },
    "fleetpulse.events": {
        "RECORD_NAMES",
        "SINGLE_OBJECT_MARKER",
        "AvroCodec",
        "SchemaStore",
        "SchemaVersion",
        "check_backward_compatible",
        "check_task_event",
        "read_task_event",
        "validator",
    },
    "fleetpulse.devstack": {
        "Devstack",
        "KafkaNode",
        "KafkaNodeConfig",
        "ensure_jars",
        "ensure_topics",
        "free_port",
    },
    "fleetpulse.testing": {"MemoryTransport", "memory_fleet", "to_micros"},
    "fleetpulse.paging": {"PagerBridge", "PagerConfig", "load_pager_config", "run_pager"},
    "fleetpulse.sink": {
        "Backend",
        "BackendError",
        "ChdbBackend",
        "ServerBackend",
        "SinkRunner",
        "migrate",
        "open_backend",
    },
    "fleetpulse.control": {
        "ROLES",
        "AgentBundle",
        "Caller",
        "ControlFollower",
        "ControlPlane",
        "ControlService",
        "ControlView",
        "GovernanceLog",
        "GovernanceState",
        "load_bundle",
        "read_control",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_members(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"


def test_errors_share_one_root() -> None:
    for name in fleetpulse.__all__:
        obj = getattr(fleetpulse, name)
        if name.endswith("Error"):
            assert issubclass(obj, fleetpulse.FleetpulseError)
    assert issubclass(fleetpulse.EventValidationError, ValueError)
