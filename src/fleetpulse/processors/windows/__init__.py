"""Phase 2: sliding windows over event time. ``engine.py`` holds every scope's buckets and
turns them into MetricSnapshots; ``buckets.py`` is the window arithmetic; ``table.py`` how a
scope's buckets are stored (rows in flat integer arrays); the figures of one bucket and the
latency quantiles are in ``processors/figures/`` (shared with ingest). All pure: no I/O, clock
injected."""
