"""User-facing errors and the wrapper that turns them into one line and an exit status.

Every expected failure (bad params, bad data, missing files, unreachable servers)
raises :class:`GanError` with one sentence that names the file, key or value and
says what to do. Entry points run through :func:`run_main`, which prints that
sentence to stderr without a traceback and exits non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class GanError(Exception):
    """An expected failure with a one-sentence message meant for the user."""

    exit_code = 2


class ConfigError(GanError):
    """An invalid value in params.yaml or on the command line."""


class DataError(GanError):
    """Raw or prepared data that cannot be used."""


class DivergenceError(GanError):
    """Training produced NaN/inf or degenerate losses; the generator must not be exported."""

    exit_code = 3


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit: 0 on success, the error's code with one line on GanError.

    Usage at the bottom of a stage script::

        if __name__ == "__main__":
            run_main(main)
    """
    from gan.console import quiet_console

    quiet_console()
    try:
        code = main()
    except GanError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; outputs were left as they were before this run.", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
