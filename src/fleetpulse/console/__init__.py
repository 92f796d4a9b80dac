"""The operations console: live, role-aware web pages served by ``fleetpulse api run`` under
``/ui/``, in the same process and with the same principals and roles as the control API.

Read in this order: ``session.py`` (signed session cookies, CSRF), ``app.py`` (the checks
every request passes, error pages), ``mount.py`` (the app put together), ``server.py``
(``fleetpulse api run``), ``pages.py`` and ``ops.py`` (what each page shows),
``actions.py`` (every button is the API's gateway call), ``live.py`` (server-sent events),
``history.py`` (the ClickHouse reads), ``charts.py`` (plots as inline SVG).
"""

from fleetpulse.console.app import Console, clickhouse_history
from fleetpulse.console.mount import create_console, mount_console
from fleetpulse.console.session import SessionKeys

__all__ = ["Console", "SessionKeys", "clickhouse_history", "create_console", "mount_console"]
