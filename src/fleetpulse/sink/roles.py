"""``fleetpulse sink migrate --roles``: least-privilege ClickHouse roles for a server.

- ``fleetpulse_writer``: the sink. INSERT on the database, and SELECT only on the columns it
  reads back (each table's ``_topic/_partition/_offset`` watermarks, the migrations table).
  It runs no DDL: the tables are created by ``sink migrate`` under an administrator.
- ``fleetpulse_analyst``: SELECT on everything, under a read-only settings profile (bounded
  query time and result size) and an hourly quota.
- ``fleetpulse_auditor``: SELECT on the audit tables only (task_events, tool_calls, governance,
  breaker_transitions and their views), under the same profile.

Users are the operator's business (``CREATE USER ... ; GRANT fleetpulse_analyst TO ...``).
For convenience, a password in ``FLEETPULSE_CLICKHOUSE_<WRITER|ANALYST|AUDITOR>_PASSWORD``
creates the user ``fleetpulse_<role>_user`` with that role; the password is sent to the server
(which stores its SHA-256) and never logged.
"""

from __future__ import annotations

import os

from fleetpulse.contract.sql import quote
from fleetpulse.sink.backend import Backend, BackendError
from fleetpulse.sink.rows import TABLES

AUDIT_TABLES = ("task_events", "tool_calls", "governance", "breaker_transitions")
ROLES = ("writer", "analyst", "auditor")
PROFILE = "fleetpulse_readonly"


def role_statements(db: str) -> list[str]:
    """The DDL and grants, idempotent (IF NOT EXISTS; GRANT is additive)."""
    out = [
        f"CREATE SETTINGS PROFILE IF NOT EXISTS {PROFILE} SETTINGS readonly = 1, "
        "max_execution_time = 60, max_result_rows = 1000000, result_overflow_mode = 'break'",
        "CREATE ROLE IF NOT EXISTS fleetpulse_writer",
        f"GRANT INSERT ON {db}.* TO fleetpulse_writer",
        f"GRANT SELECT ON {db}.schema_migrations TO fleetpulse_writer",
    ]
    out += [
        f"GRANT SELECT(_topic, _partition, _offset) ON {db}.{t} TO fleetpulse_writer"
        for t in TABLES
    ]
    out += [
        f"CREATE ROLE IF NOT EXISTS fleetpulse_analyst SETTINGS PROFILE '{PROFILE}'",
        f"CREATE ROLE IF NOT EXISTS fleetpulse_auditor SETTINGS PROFILE '{PROFILE}'",
        f"GRANT SELECT ON {db}.* TO fleetpulse_analyst",
        *(f"GRANT SELECT ON {db}.{t}{v} TO fleetpulse_auditor"
          for t in AUDIT_TABLES for v in ("", "_v")),
        "CREATE QUOTA IF NOT EXISTS fleetpulse_analyst_quota FOR INTERVAL 1 hour "
        "MAX queries = 2000, result_rows = 100000000 TO fleetpulse_analyst, fleetpulse_auditor",
    ]  # fmt: skip
    return out


def user_statements(env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(role, statement) pairs for the users whose password is in the environment."""
    env = dict(os.environ) if env is None else env
    out = []
    for role in ROLES:
        password = env.get(f"FLEETPULSE_CLICKHOUSE_{role.upper()}_PASSWORD")
        if not password:
            continue
        user = f"fleetpulse_{role}_user"
        out.append((role, f"CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_password "
                          f"BY {quote(password)} DEFAULT ROLE fleetpulse_{role}"))  # fmt: skip
        out.append((role, f"GRANT fleetpulse_{role} TO {user}"))
    return out


def provision_roles(backend: Backend, env: dict[str, str] | None = None) -> list[str]:
    """Create the roles (and the users configured in the environment); return what was done."""
    done = []
    try:
        for stmt in role_statements(backend.database):
            backend.command(stmt)
        done += [f"role fleetpulse_{r}" for r in ROLES]
        for role, stmt in user_statements(env):
            backend.command(stmt)
            if stmt.startswith("GRANT"):
                done.append(f"user fleetpulse_{role}_user")
    except BackendError as exc:
        message = str(exc).split("\n", 1)[0]
        if "password" in message.lower() or "IDENTIFIED" in message:
            message = "creating a user failed (message withheld: it may quote the password)"
        raise BackendError(
            f"provisioning roles failed: {message}. Roles need a ClickHouse server "
            "(FLEETPULSE_CLICKHOUSE_URL) and a user allowed to manage access "
            "(access_management=1); the embedded store has a single local user."
        ) from None
    return done
