"""Settings, one pydantic-settings model per process, env prefix ``FLEETPULSE_``.

Settings are built in ``main()`` (or ``Fleet.connect``) and passed down; nothing reads the
environment at import time. A bad value fails at start with a ``ConfigError`` that names the
variable, what was given, and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.horizons import parse_horizons
from fleetpulse.contract.stack_state import read_state
from fleetpulse.contract.topics import Topics

_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._\-]*$")
_SECRETISH = re.compile(r"password|secret|token|key", re.IGNORECASE)

S = TypeVar("S", bound="CommonSettings")


class CommonSettings(BaseSettings):
    """What every fleetpulse process needs: where Kafka is and how topics are named."""

    model_config = SettingsConfigDict(env_prefix="FLEETPULSE_", extra="forbid", defer_build=True)

    home: Path = Field(Path(".fleetpulse"), description="devstack state, logs and data")
    bootstrap_servers: str | None = Field(None, description="Kafka bootstrap servers")
    topic_prefix: str = "fleetpulse."
    schema_registry_url: str | None = None
    # extra librdkafka security settings are a later issue; the password is a SecretStr already
    sasl_password: SecretStr | None = None
    policy: Path | None = Field(
        None, description="fleet policy YAML (breakers; later alerts, roles); unset: defaults"
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        for part in v.split(","):
            if not _HOSTPORT.match(part.strip()):
                raise ValueError(
                    f"{part.strip()!r} is not host:port. Expected e.g. 127.0.0.1:9092,host2:9092"
                )
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not _PREFIX.match(v):
            raise ValueError(f"{v!r} has characters Kafka topic names refuse; use [A-Za-z0-9._-]")
        return v

    @field_validator("schema_registry_url")
    @classmethod
    def _check_registry(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith(("http://", "https://", "mock://")):
            raise ValueError(f"{v!r} is not a URL. Expected http(s)://host:8081")
        return v

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def resolved_bootstrap(self) -> str:
        """The bootstrap servers: the setting, else the running devstack's."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        state = read_state(self.home)
        if state and state.get("kafka", {}).get("bootstrap_servers"):
            return str(state["kafka"]["bootstrap_servers"])
        raise ConfigError(
            "FLEETPULSE_BOOTSTRAP_SERVERS is not set and no devstack runs under "
            f"{self.home}. Fix: run `fleetpulse dev up`, or export "
            "FLEETPULSE_BOOTSTRAP_SERVERS=host:9092",
            field="bootstrap_servers",
        )


class SdkSettings(CommonSettings):
    """The agent SDK's settings; ``Fleet.connect(**overrides)`` wins over the environment."""

    spool_dir: Path | None = Field(None, description="default: $FLEETPULSE_HOME/spool")
    price_table: Path | None = Field(
        None, description="a JSON price table overriding the shipped one"
    )
    queue_max_messages: int = Field(100_000, gt=0, description="in-memory queue before spooling")
    linger_ms: int = Field(5, ge=0)
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"
    message_timeout_ms: int = Field(120_000, gt=0, description="then the event is spooled")
    agent_version: str = ""
    agent_role: str = ""
    validate_events: bool = Field(False, description="check every event against the schema")
    guard: bool = Field(True, description="follow fleetpulse.control: breakers and pauses")
    control_catchup_timeout_s: float = Field(
        5.0, ge=0, description="how long connect() waits to read the control topic's states"
    )
    pause_wait_s: float = Field(
        0.0, ge=0, description="fleet.task() on a paused agent: wait this long, then raise"
    )
    governance: bool = Field(
        True, description="follow fleetpulse.governance: the active bundle and approvals"
    )
    agent_label: str = Field(
        "production", description="the bundle label this instance runs (production, staging)"
    )


# One knob, FLEETPULSE_PROCESSORS_MAX_FUTURE_S, read by the processors and the sink alike, so
# both reject the same task events (contract/events/task_event.py).
MAX_FUTURE_S: Any = Field(
    300,
    ge=0,
    description="task events ended further ahead of the consumer's clock go to the DLQ "
    "(processors and sink alike)",
)


class DevstackSettings(CommonSettings):
    """The local infrastructure: Apache Kafka from Maven Central jars, KRaft, one node."""

    kafka_version: str = "4.1.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_heap: str = Field("768m", pattern=r"^\d+[mMgG]$")
    kafka_cache: Path = Field(
        Path.home() / ".cache" / "fleetpulse", description="jars cache, outside the repo"
    )
    task_events_partitions: int = Field(6, ge=1, le=1024)


class ProcessorSettings(CommonSettings):
    """The stream processors (``fleetpulse processors run``)."""

    processors_cadence_s: float = Field(5.0, gt=0, description="MetricSnapshot cadence")
    processors_long_cadence_s: float = Field(
        60.0,
        ge=0,
        description="MetricSnapshot cadence of the horizons built of buckets longer than "
        "processors_cadence_s (1 h, 24 h); 0: every round",
    )
    processors_partials_interval_s: float = Field(
        1.0, gt=0, description="how often changed global cells are repartitioned"
    )
    processors_allowed_lateness_s: int = Field(120, ge=0)
    processors_max_future_s: int = MAX_FUTURE_S
    processors_horizons: str = Field(
        "60/5,300/5,3600/60,86400/900", description="window/bucket seconds, comma-separated"
    )
    processors_batch_max: int = Field(5000, gt=0, description="records per decoded batch")
    processors_batch_wait_s: float = Field(0.2, gt=0)
    processors_ingest_batch_max: int = Field(
        50_000, gt=0, le=1_000_000, description="task events per native ingest pass at most"
    )
    processors_ingest_native_min: int = Field(
        300,
        ge=0,
        description="smaller batches are aggregated in Python (a native pass costs "
        "~20 ms of decoding and planning whatever its size)",
    )
    processors_ingest_wait_s: float = Field(
        0.1, gt=0, le=10, description="how long task events wait for a native ingest pass"
    )
    processors_memory_release_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="how often a metric worker hands the memory its passes freed back to the "
        "system (glibc malloc_trim, Arrow's pool, the engine's jemalloc); 0: never (the "
        "allocators keep it for reuse)",
    )
    processors_checkpoint_interval_s: float = Field(
        60.0,
        ge=0,
        description="how often a metric worker checkpoints its windows to Kafka, so that a "
        "restart replays only the events after the checkpoint; 0: never (a restart replays "
        "the longest window's events)",
    )
    processors_workers: int = Field(1, ge=1, le=64)
    processors_web_port: int = Field(
        6066, ge=0, le=65535, description="Prometheus /metrics; worker i uses port + i; 0: off"
    )
    processors_web_host: str = Field(
        "127.0.0.1", description="where /metrics listens; 0.0.0.0 to scrape from other hosts"
    )
    processors_prometheus_max_series: int = Field(
        50, ge=1, description="label values per gauge family; the rest sum into _other"
    )
    processors_group: str | None = Field(None, description="default: <prefix>processors")
    processors_instance_id: str | None = Field(
        None,
        description="a stable name for this metric worker (a pod or host name): with it the "
        "worker is a static member of its group, so a restarted worker takes its partitions "
        "back at once instead of after the session timeout. Unique per worker: a second "
        "process with the same name fences the first",
    )
    breakers_group: str | None = Field(None, description="default: <prefix>breakers")
    breakers_fetch_wait_ms: int = Field(
        10, ge=0, le=500, description="breaker stage: how long a fetch may wait for data"
    )
    breakers_session_timeout_ms: int = Field(
        6000, ge=1000, description="breaker stage: how soon a dead worker's breakers move on"
    )
    alerts_group: str | None = Field(None, description="default: <prefix>alerts")
    alerts_eval_interval_s: float = Field(
        0.25, gt=0, le=60, description="alert stage: how often the rules are evaluated"
    )
    alerts_ledger_interval_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="alert stage: how often the budgets' cost totals are saved, so a restart "
        "adopts them instead of replaying the month",
    )
    alerts_workers: int = Field(
        1, ge=1, le=64, description="alert workers sharing the alert-cells partitions"
    )
    alerts_index: int = Field(
        0, ge=0, lt=64, description="which of the alert workers this one is (0-based)"
    )

    @field_validator("processors_horizons")
    @classmethod
    def _check_horizons(cls, v: str) -> str:
        parse_horizons(v)  # raises ValueError naming the bad entry
        return v

    @property
    def group_id(self) -> str:
        return self.processors_group or f"{self.topic_prefix}processors"

    @property
    def breakers_group_id(self) -> str:
        return self.breakers_group or f"{self.topic_prefix}breakers"

    @property
    def alerts_group_id(self) -> str:
        return self.alerts_group or f"{self.topic_prefix}alerts"


class PagerSettings(CommonSettings):
    """The paging bridge (``fleetpulse pager run``)."""

    pager_config: Path | None = Field(
        None, description="routing YAML: receivers, routes, retries (required to run)"
    )
    pager_group: str | None = Field(None, description="default: <prefix>pager")

    @property
    def pager_group_id(self) -> str:
        return self.pager_group or f"{self.topic_prefix}pager"


class SinkSettings(CommonSettings):
    """The ClickHouse sink (``fleetpulse sink run``) and analytics commands."""

    clickhouse_url: str | None = Field(
        None, description="a ClickHouse server (clickhouse-connect); unset: embedded chDB"
    )
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = Field("fleetpulse", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_ttl_days: int = Field(400, ge=1, description="rows older than this are dropped")
    data_dir: Path | None = Field(None, description="embedded chDB data; default $HOME/clickhouse")
    sink_batch_rows: int = Field(50_000, gt=0, description="task events per insert batch")
    sink_batch_wait_s: float = Field(1.0, gt=0, description="the longest a batch waits")
    sink_retry_max_s: float = Field(30.0, gt=0, description="backoff cap while ClickHouse is down")
    sink_group: str | None = Field(None, description="default: <prefix>sink")
    sink_decode_in_clickhouse: bool = Field(
        True, description="embedded store: ClickHouse parses the task events' Avro (fast path)"
    )
    processors_max_future_s: int = MAX_FUTURE_S
    query_max_threads: int = Field(1, ge=1, le=64, description="threads per analyst query")
    query_max_memory_mb: int = Field(1024, ge=16, description="memory per analyst query")
    query_max_execution_s: float = Field(
        60, gt=0, le=3600, description="an analyst query's time limit"
    )

    @field_validator("clickhouse_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith(("http://", "https://", "clickhouse://")):
            raise ValueError(f"{v!r} is not a URL. Expected http(s)://host:8123")
        return v

    @property
    def group_id(self) -> str:
        return self.sink_group or f"{self.topic_prefix}sink"

    @property
    def store_dir(self) -> Path:
        return self.data_dir or self.home / "clickhouse"


class ControlSettings(SinkSettings):
    """The control API (``fleetpulse api run``) and the CLI's governance verbs."""

    api_host: str = Field("127.0.0.1", description="where `api run` listens")
    api_port: int = Field(8700, ge=1, le=65535)
    api_url: str | None = Field(None, description="the CLI talks to this API; unset: directly")
    token: SecretStr | None = Field(None, description="the caller's API token")

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not a URL. Expected http(s)://host:8700")
        return v.rstrip("/")


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment plus overrides, or raise a readable ConfigError."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _config_error(cls, exc) from None


def _config_error(cls: type[CommonSettings], exc: ValidationError) -> ConfigError:
    lines = []
    first_field = None
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "?"
        first_field = first_field or field
        env = f"FLEETPULSE_{field.upper()}"
        got = "***" if _SECRETISH.search(field) else err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown setting. Fix: remove it; see the README's table")
        else:
            lines.append(f"{env} (or {field}=...): {msg} (got {got!r})")
    return ConfigError(f"invalid {cls.__name__}: " + "; ".join(lines), field=first_field)
