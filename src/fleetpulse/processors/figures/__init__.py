"""The figures a cell and a window bucket hold, shared by phase 1 (``ingest/``) and phase 2
(``windows/``): ``aggregate.py`` the integer counters of one scope and bucket, ``sketch.py``
the latency quantiles. Pure: no I/O."""

__all__: list[str] = []
