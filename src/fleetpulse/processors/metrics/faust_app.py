"""The faust-streaming runtime of the processors (``fleetpulse processors run --runtime
faust``).

faust runs where its model fits: the partials stream (global scopes' cells, whose volume is
scopes x buckets, not events), its timer, and the ``/metrics`` page. Task events never pass
through faust: an empty faust agent moves ~6,000 records/s per worker here, so the task events
are consumed by the plain confluent-kafka loop (``plain.py``) in a thread of this process and
handed to the native ingest pass in batches. Both feed the same ``ProcessorCore`` (its lock
serialises them).

The partials agent runs with concurrency 1 (faust's known offset-commit bugs need concurrent
actors with gaps in acks). Offsets are acked after a batch is applied: at least once; the
engine drops cells older than the ones it holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, ClassVar

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.processors.metrics.plain import PlainRunner
from fleetpulse.processors.metrics.prom import exposition
from fleetpulse.processors.metrics.worker import ProcessorCore, Record

logger = logging.getLogger(__name__)
_PROM_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


def build_app(core: ProcessorCore, settings: ProcessorSettings, *, index: int = 0) -> faust.App:
    port = settings.processors_web_port + index if settings.processors_web_port else 0
    datadir = settings.home / "processors" / f"worker-{index}"
    datadir.mkdir(parents=True, exist_ok=True)
    core.partials_group = f"{core.group_id}-partials"  # faust's own group protocol: not shared
    app = faust.App(
        core.partials_group,
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

    partials = app.topic(core.topics.partials, value_serializer="raw", key_serializer="raw")
    app.agent(partials, name="partials", concurrency=1)(consume)

    interval = min(settings.processors_partials_interval_s, settings.processors_cadence_s) / 2

    @app.timer(interval=interval)
    async def tick() -> None:
        core.tick()

    async def on_assigned(sender: Any, assigned: Any, *, signal: Any = None, **_: Any) -> None:
        # returns at once: the replay runs in a thread while the stream waits in ready_for
        new = core.begin_assignment(
            ((tp.topic, tp.partition) for tp in assigned), topics=[core.topics.partials]
        )
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
    from faust.web import drivers  # noqa: PLC0415  (faust: `--runtime faust` only)

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
    try:
        core.ingest.warm()  # here, not on the task-events thread: a failure stops the worker
    except BaseException:
        core.close()
        raise
    app = build_app(core, settings, index=index)
    events = PlainRunner(core, settings, topics=[core.topics.task_events], web=False, index=index)
    events.close_core = False
    thread = threading.Thread(target=events.run, name="task-events", daemon=True)
    thread.start()

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # returns (or exits) once the worker stopped
    finally:
        events.stop_event.set()
        thread.join(30)
        core.close()
