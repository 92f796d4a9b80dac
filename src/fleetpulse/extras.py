"""Which optional extra each CLI verb needs (the ``fleetpulse`` console script, in
``__main__.py``, asks before it loads the CLI).

``pip install fleetpulse`` is the SDK alone; the command line and the servers come with extras
(pyproject.toml): ``cli`` (typer, rich, httpx: every verb that needs nothing more), and
``processors``, ``sink``, ``api`` (``console`` is the same), ``registry``, ``all``. A verb
whose extra is missing says so in one line and exits 1, without a traceback:

    fleetpulse processors needs the processors extra: pip install 'fleetpulse[processors]'

This module imports nothing beyond the standard library, so the console script can say that
even when typer and rich (the ``cli`` extra) are absent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# the first word of a command line -> the extra its imports come from
VERB_EXTRA: dict[str, str] = {
    "processors": "processors",
    "sink": "sink",
    "sql": "sink",
    "report": "sink",
    "api": "api",
    "demo": "all",
}
# the modules the `fleetpulse` command itself needs (the `cli` extra)
CLI_MODULES = ("typer", "rich", "httpx")
# what each extra brings that a verb imports (checked before the verb starts any work)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "cli": CLI_MODULES,
    "sink": (*CLI_MODULES, "chdb", "pyarrow", "clickhouse_connect"),
    "api": (*CLI_MODULES, "fastapi", "uvicorn", "jinja2"),
    "processors": (*CLI_MODULES, "chdb", "pyarrow", "ddsketch", "prometheus_client", "faust"),
}
EXTRA_MODULES["all"] = tuple(dict.fromkeys(m for ms in EXTRA_MODULES.values() for m in ms))


def extra_for(argv: Sequence[str]) -> str:
    """The extra the command line ``argv`` (without the program name) needs."""
    verb = next((a for a in argv if not a.startswith("-")), "")
    return VERB_EXTRA.get(verb, "cli")


def missing_extra_line(argv: Sequence[str], missing: str | None) -> str | None:
    """The one line to print when ``missing`` (a module name) could not be imported, or None
    when it is no third-party module (a missing fleetpulse module is a bug, not an extra)."""
    top = (missing or "").split(".")[0]
    if not top or top == "fleetpulse":
        return None
    extra = extra_for(argv)
    if top not in EXTRA_MODULES[extra]:
        # a verb of the `cli` extra reaching further (`audit` on a ClickHouse server, say)
        extra = next((e for e, ms in EXTRA_MODULES.items() if top in ms), "all")
    verb = next((a for a in argv if not a.startswith("-")), "")
    who = f"fleetpulse {verb}" if verb else "fleetpulse"
    return f"{who} needs the {extra} extra: pip install 'fleetpulse[{extra}]'"


def check(argv: Sequence[str]) -> str | None:
    """The one line to print if the extra the command line ``argv`` needs is not installed."""
    if "--help" in argv:
        return None
    for module in EXTRA_MODULES[extra_for(argv)]:
        if importlib.util.find_spec(module) is None:
            return missing_extra_line(argv, module)
    return None
