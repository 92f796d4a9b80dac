"""The metric worker's edges: ``worker.py`` (Kafka in and out around the ingest pass and the
windows), the runtimes that drive it (``plain.py``, the default; ``faust_app.py``) and the
Prometheus exposition (``prom.py``)."""
