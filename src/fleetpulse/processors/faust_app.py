"""The faust-streaming runtime of the processors (``fleetpulse processors run``).

Raw bytes in (``value_serializer="raw"``), batches out of ``stream.take_events`` (the events
carry partition and offset for the DLQ), decoded and applied by ``ProcessorCore`` in one call per
batch. Agents run with concurrency 1: faust's known offset-commit bugs need concurrent actors
with gaps in acks, and ordered per-partition processing is what the windows want anyway. Offsets
are acked after the batch is applied, so delivery is at least once; the engine drops offsets it
has already applied.

faust's per-message machinery (conductor, channel, stream iterator) costs far more than our own
work per event on small machines; ``bench/processors.py`` measures it against the same batch
logic in a plain confluent-kafka loop (``plain.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from fleetpulse.config import ProcessorSettings
from fleetpulse.processors.core import ProcessorCore, Record
from fleetpulse.processors.prom import exposition

logger = logging.getLogger(__name__)
_PROM_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


def build_app(core: ProcessorCore, settings: ProcessorSettings, *, index: int = 0) -> faust.App:
    port = settings.processors_web_port + index if settings.processors_web_port else 0
    datadir = settings.home / "processors" / f"worker-{index}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        core.group_id,
        broker=f"kafka://{core.bootstrap.split(',')[0]}",
        broker_client_id=f"fleetpulse-processors-{index}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,
        broker_max_poll_records=settings.processors_batch_max,
        stream_buffer_maxsize=2 * settings.processors_batch_max,
        web_enabled=port > 0,
        web_port=port or 6066,
        web_bind=settings.processors_web_host,
        web_in_thread=False,
    )
    app._new_web = lambda: _only_our_routes(app)  # type: ignore[method-assign]
    batch_max = settings.processors_batch_max
    wait = settings.processors_batch_wait_s

    async def consume(stream: Any) -> None:
        async for events in stream.take_events(batch_max, within=wait):
            records = [
                Record(
                    e.message.topic, e.message.partition, e.message.offset, e.message.key, e.value
                )
                for e in events
            ]
            while not core.ready_for(records):  # a new partition is replaying its history
                await asyncio.sleep(0.05)
            core.process(records)

    task_events = app.topic(core.topics.task_events, value_serializer="raw", key_serializer="raw")
    partials = app.topic(core.topics.partials, value_serializer="raw", key_serializer="raw")
    app.agent(task_events, name="task-events", concurrency=1)(consume)
    app.agent(partials, name="partials", concurrency=1)(consume)

    interval = min(settings.processors_partials_interval_s, settings.processors_cadence_s) / 2

    @app.timer(interval=interval)
    async def tick() -> None:
        core.tick()

    async def on_assigned(sender: Any, assigned: Any, *, signal: Any = None, **_: Any) -> None:
        # returns at once: the replay runs in a thread while the stream waits in ready_for
        new = core.begin_assignment((tp.topic, tp.partition) for tp in assigned)
        loop = asyncio.get_running_loop()
        for topic, partition in new:
            fut = loop.run_in_executor(None, core.rebuild, topic, partition)
            fut.add_done_callback(crash_on_error)

    def crash_on_error(fut: asyncio.Future[None]) -> None:
        # a partition that cannot be rebuilt must not leave its stream waiting silently
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            logger.error("rebuilding a partition failed: %s", exc)
            crashing.add(asyncio.ensure_future(app.crash(exc)))

    crashing: set[asyncio.Future[None]] = set()

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp wants the charset outside content_type
            return self.bytes(exposition(core.registry), content_type=_PROM_TYPE)

    return app


def _only_our_routes(app: faust.App) -> Any:
    """faust's web server without its own pages (``/router/``, ``/table/``, ``/graph``,
    statistics, the index): only what the processors add (``/metrics``)."""
    from faust.web import drivers

    base: Any = drivers.by_url(app.conf.web)

    class OnlyOurs(base):
        default_blueprints: ClassVar[list[Any]] = []
        production_blueprints: ClassVar[list[Any]] = []
        debug_blueprints: ClassVar[list[Any]] = []
        optional_blueprints: ClassVar[list[Any]] = []

    return OnlyOurs(app)


def run_worker(settings: ProcessorSettings, *, index: int = 0, loglevel: str = "warn") -> None:
    """Run one faust worker until SIGTERM/SIGINT; flushes outputs on the way out."""
    core = ProcessorCore(settings, client_id=f"fleetpulse-processors-{index}")
    app = build_app(core, settings, index=index)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # returns (or exits) once the worker stopped
    finally:
        core.close()
