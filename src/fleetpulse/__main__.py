"""The ``fleetpulse`` console script (and ``python -m fleetpulse``): the CLI when its extra is
installed, else one line naming the extra to install (``extras.py``)."""

from __future__ import annotations

import sys

from fleetpulse.extras import check


def main() -> None:
    """Check the extra the command line needs, then run the CLI."""
    line = check(sys.argv[1:])
    if line is not None:
        print(line, file=sys.stderr)  # noqa: T201  (the command line's own error line)
        sys.exit(1)
    # lazy on purpose: the CLI needs the `cli` extra (typer, rich), checked just above
    from fleetpulse.cli import main as cli_main  # noqa: PLC0415

    cli_main()


if __name__ == "__main__":
    main()
