"""Phase 2: sliding windows over event time. ``engine.py`` holds every scope's buckets and
turns them into MetricSnapshots; ``buckets.py`` is the window arithmetic; ``table.py`` how a
scope's buckets are stored (rows in flat integer arrays); ``aggregate.py`` the figures of one
bucket; ``sketch.py`` the latency quantiles. All pure: no I/O, clock injected."""
