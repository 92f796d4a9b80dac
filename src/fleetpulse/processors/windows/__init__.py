"""Phase 2: sliding windows over event time. ``engine.py`` holds every scope's buckets and
turns them into MetricSnapshots; ``buckets.py`` is the window arithmetic; ``aggregate.py`` the
figures of one bucket; ``sketch.py`` the latency quantiles. All pure: no I/O, clock injected."""
