"""User-facing errors and the wrapper that turns them into one line and an exit status.

Every expected failure (bad params, bad data, missing files, unreachable servers)
raises :class:`GanError` with one sentence that names the file, key or value and
says what to do. Entry points run through :func:`run_main`, which prints that
sentence to stderr without a traceback and exits non-zero.
"""

from __future__ import annotations

import signal
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


class Interrupted(GanError):
    """A run stopped by a signal before it finished (its outputs left as they were).

    ``signum`` sets the exit status, 128 + the signal's number as a shell reports it.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def interrupted_message(signum: int) -> str:
    """The one sentence for a run ended by ``signum``."""
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    return f"{what}; outputs were left as they were before this run, and running the same command again starts over or resumes."


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit: 0 on success, the error's code with one line on GanError.

    SIGINT and SIGTERM (``gan.signals``) end the run with one sentence and 130 / 143,
    whatever error they caused on the way out (a library may turn them into its own
    exception or ``sys.exit``).

    Usage at the bottom of a stage script::

        if __name__ == "__main__":
            run_main(main)
    """
    from gan import signals
    from gan.console import quiet_console

    quiet_console()
    signals.install()
    try:
        code = main()
    except Interrupted as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except BaseException as err:
        signum = signals.received() or (getattr(err, "signum", signal.SIGINT) if isinstance(err, KeyboardInterrupt) else None)
        if signum is not None:
            print(f"error: {interrupted_message(signum)}", file=sys.stderr)
            sys.exit(signals.exit_status(signum))
        if isinstance(err, GanError):
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        raise
    sys.exit(code or 0)
