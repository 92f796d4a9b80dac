"""The stream processors, in the order a task event walks through them:

1. ``ingest/``: phase 1. Batches of raw task events decoded and grouped in one native columnar
   pass into cells (partial aggregates per scope and bucket); ``reference.py`` is the same in
   plain Python. Read ``ingest/native.py`` first.
2. ``windows/``: phase 2. Cells added into sliding windows per scope (``engine.py``, pure,
   with an injected clock); ``figures/``: the counters and the latency sketch a cell and a
   window bucket hold (shared by phases 1 and 2).
3. ``metrics/``: the metric worker's Kafka edge (``worker.py``), its runtimes (``plain.py``,
   ``faust_app.py``) and Prometheus (``prom.py``).
4. ``breakers/``: the fleet-wide breaker state machine (``machine.py``, pure) and its stage.
5. ``alerts/``: alert rules, their evaluator and lifecycle (pure), and the alert stage.

Shared by the stages: ``loop.py`` (the one poll loop, a topic's partition count),
``produce.py`` (back-pressure), ``supervisor.py`` (the processes of ``fleetpulse processors run``).
"""
