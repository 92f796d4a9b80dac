"""The ClickHouse sink: Kafka to ClickHouse (embedded chDB, or a server), exactly once.

Read `runner.py` (the loop and its exactly-once rules), then `backend.py` (the two backends),
`migrate.py` and `migrations/*.sql` (the tables), `rows.py` (records to columns).
"""

from fleetpulse.sink.backend import Backend, BackendError, ChdbBackend, ServerBackend
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.runner import SinkRunner, open_backend

__all__ = [
    "Backend",
    "BackendError",
    "ChdbBackend",
    "ServerBackend",
    "SinkRunner",
    "migrate",
    "open_backend",
]
