"""The stream processors, in the order a task event walks through them:

1. ``ingest/``: phase 1. Batches of raw task events decoded and grouped in one native columnar
   pass into cells (partial aggregates per scope and bucket); ``reference.py`` is the same in
   plain Python. Read ``ingest/native.py`` first.
2. ``windows/``: phase 2. Cells added into sliding windows per scope (``engine.py``, pure,
   with an injected clock), the figures and the latency sketch they hold.
3. ``metrics/``: the metric worker's Kafka edge (``worker.py``), its runtimes (``plain.py``,
   ``faust_app.py``) and Prometheus (``prom.py``).
4. ``breakers/``: the fleet-wide breaker state machine (``machine.py``, pure) and its stage.
5. ``alerts/``: alert rules, their evaluator and lifecycle (pure), and the alert stage.

Shared by the stages: ``loop.py`` (the one poll loop), ``produce.py``
(back-pressure), ``supervisor.py`` (the processes of ``fleetpulse processors run``).
"""
