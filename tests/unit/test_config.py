from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse import ConfigError
from fleetpulse.contract.config import DevstackSettings, SdkSettings, load_settings
from fleetpulse.contract.stack_state import write_state


@pytest.mark.parametrize(
    "env, value, needle",
    [
        ("FLEETPULSE_BOOTSTRAP_SERVERS", "foo", "is not host:port"),
        ("FLEETPULSE_TOPIC_PREFIX", "fleet pulse", "Kafka topic names refuse"),
        ("FLEETPULSE_SCHEMA_REGISTRY_URL", "registry:8081", "Expected http(s)://"),
        ("FLEETPULSE_QUEUE_MAX_MESSAGES", "0", "greater than 0"),
        ("FLEETPULSE_COMPRESSION", "brotli", "lz4"),
    ],
)
def test_bad_env_fails_naming_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings(SdkSettings)
    assert env in str(info.value)
    assert needle in str(info.value)
    assert repr(value) in str(info.value)


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_SASL_PASSWORD", "hunter2")
    settings = load_settings(SdkSettings)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    with pytest.raises(ConfigError) as info:
        load_settings(SdkSettings, sasl_password=["not", "a", "string", "hunter2"])
    assert "hunter2" not in str(info.value)


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_TOPIC_PREFIX", "env.")
    assert load_settings(SdkSettings, topic_prefix="code.").topics.task_events == (
        "code.task-events"
    )


def test_bootstrap_comes_from_the_running_devstack(tmp_path: Path) -> None:
    settings = load_settings(DevstackSettings, home=tmp_path)
    with pytest.raises(ConfigError, match="fleetpulse dev up"):
        settings.resolved_bootstrap()
    write_state(tmp_path, {"kafka": {"bootstrap_servers": "127.0.0.1:19092"}})
    assert settings.resolved_bootstrap() == "127.0.0.1:19092"
    explicit = load_settings(DevstackSettings, home=tmp_path, bootstrap_servers="k:9092")
    assert explicit.resolved_bootstrap() == "k:9092"


def test_settings_are_not_read_at_import() -> None:
    import importlib

    import fleetpulse

    importlib.reload(fleetpulse)  # would raise if any module built settings at import
