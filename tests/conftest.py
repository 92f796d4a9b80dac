"""Shared fixtures.

* ``kafka``: a session-scoped real Apache Kafka: the devstack's KafkaNode in a temp dir on free
  ports, or an existing cluster named by ``FLEETPULSE_TEST_BOOTSTRAP``.
* ``own_broker``: a broker apart from the shared one, to kill and start again (one per
  session, running when each test begins).
* ``fresh_prefix``: every fleetpulse topic created under a prefix unique to the test.
* ``new_topic`` / ``group_id``: one fresh topic or consumer group per call.
* ``docker_kafka``: the testcontainers Kafka, only where a Docker engine answers; skipped with
  the reason otherwise.

``make test`` runs the suite on two pytest-xdist workers, a whole module per worker
(``--dist loadfile``: a module's fixtures are built once), each worker with its own session
broker. The longest modules are handed out first (`pytest_collection_modifyitems`), so that
neither worker is left with a long module at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from fleetpulse.contract.config import DevstackSettings
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import KafkaNode, KafkaNodeConfig, ensure_jars, ensure_topics, free_port

if os.environ.get("PYTEST_XDIST_WORKER"):
    # an xdist worker starts with LINES=24 and COLUMNS=80 in its environment, and rich fixes a
    # Console's width from COLUMNS when it is made: the CLI's module-level consoles would print
    # 80 columns wide there whatever a test asks for, and nowhere else
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

# The modules that take longest, longest first (from `--durations`): the demo's 150 s scenario,
# process start-ups, session timeouts. Handed out first, they leave the short modules to even
# out the two workers at the end. Every other module keeps its place after them.
LONGEST_FIRST = (
    "integration/test_demo.py",
    "integration/test_governance.py",
    "integration/test_processors.py",
    "integration/test_sdk_kafka.py",
    "integration/test_sink.py",
    "integration/test_broker_outage.py",
    "integration/test_breakers.py",
    "integration/test_api.py",
    "integration/test_sink_analytics.py",
    "integration/test_wheel.py",
    "integration/test_console_browser.py",
    "integration/test_api_contract.py",
    "integration/test_devstack_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next(
            (i for i, m in enumerate(LONGEST_FIRST) if path.endswith(m)), len(LONGEST_FIRST)
        )

    items.sort(key=rank)  # stable: each module's own order is kept


@dataclass
class KafkaUnderTest:
    bootstrap_servers: str
    node: KafkaNode | None  # None when the cluster is external


@pytest.fixture(scope="session")
def kafka_jars() -> Path:
    settings = DevstackSettings()
    return ensure_jars(settings.kafka_cache, settings.kafka_version)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaUnderTest]:
    external = os.environ.get("FLEETPULSE_TEST_BOOTSTRAP")
    if external:
        yield KafkaUnderTest(external, None)
        return
    settings = DevstackSettings()
    jars = ensure_jars(settings.kafka_cache, settings.kafka_version)
    node = KafkaNode(
        KafkaNodeConfig(
            home=tmp_path_factory.mktemp("kafka"),
            jars=jars,
            port=free_port(),
            controller_port=free_port(),
            heap="512m",
        )
    )
    node.start()
    try:
        yield KafkaUnderTest(node.bootstrap_servers, node)
    finally:
        node.stop()


@pytest.fixture(scope="session")
def _restartable_broker(
    kafka_jars: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaNode]:
    node = KafkaNode(
        KafkaNodeConfig(
            home=tmp_path_factory.mktemp("own-kafka"),
            jars=kafka_jars,
            port=free_port(),
            controller_port=free_port(),
            heap="384m",
        )
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def own_broker(_restartable_broker: KafkaNode) -> KafkaNode:
    """A broker this test may stop, kill and start again, apart from the shared session one.

    One per session (a start costs a JVM and a KRaft format), running and holding no topic when
    the test begins, as a new one would: started again if the test before left it down, and the
    topics that test made deleted (a restart then loads only the test's own partitions).
    """
    node = _restartable_broker
    if not node.is_running():
        node.start()
    admin = AdminClient({"bootstrap.servers": node.bootstrap_servers})
    left = [t for t in admin.list_topics(timeout=30).topics if not t.startswith("__")]
    for future in admin.delete_topics(left, operation_timeout=30).values() if left else []:
        future.result()
    return node


@pytest.fixture
def fresh_prefix(kafka: KafkaUnderTest) -> Topics:
    """All fleetpulse topics under a prefix of this test's own."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(kafka.bootstrap_servers, topics)
    return topics


@pytest.fixture
def new_topic(kafka: KafkaUnderTest) -> Callable[..., str]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})

    def make(partitions: int = 3, **config: str) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result()
        return name

    return make


@pytest.fixture
def group_id() -> Callable[[], str]:
    return lambda: f"test-group-{uuid.uuid4().hex[:12]}"


def docker_available() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed"
    try:
        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


@pytest.fixture(scope="session")
def docker_kafka() -> Iterator[str]:
    reason = docker_available()
    if reason:
        pytest.skip(f"testcontainers Kafka skipped: {reason}")
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer() as container:
        yield container.get_bootstrap_server()


@dataclass(frozen=True)
class ClickHouseUnderTest:
    url: str
    user: str
    password: str


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseUnderTest]:
    """A real ClickHouse server for the clickhouse-connect backend: the one named by
    ``FLEETPULSE_TEST_CLICKHOUSE_URL`` (user and password from ``FLEETPULSE_TEST_CLICKHOUSE_USER``
    / ``_PASSWORD``), else a testcontainers one where Docker answers; skipped otherwise."""
    url = os.environ.get("FLEETPULSE_TEST_CLICKHOUSE_URL")
    if url:
        yield ClickHouseUnderTest(
            url,
            os.environ.get("FLEETPULSE_TEST_CLICKHOUSE_USER", "default"),
            os.environ.get("FLEETPULSE_TEST_CLICKHOUSE_PASSWORD", ""),
        )
        return
    reason = docker_available()
    if reason:
        pytest.skip(
            f"ClickHouse server tests skipped: FLEETPULSE_TEST_CLICKHOUSE_URL is unset and {reason}"
        )
    from testcontainers.clickhouse import ClickHouseContainer

    with ClickHouseContainer() as c:
        port = c.get_exposed_port(8123)
        yield ClickHouseUnderTest(
            f"http://{c.get_container_host_ip()}:{port}", c.username, c.password
        )
