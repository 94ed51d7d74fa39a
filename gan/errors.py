"""User-facing errors and the wrapper that turns them into one line and an exit status.

Every expected failure (bad params, bad data, missing files, unreachable servers)
raises :class:`GanError` with one sentence that names the file, key or value and
says what to do. Entry points run through :func:`run_main`, which prints that
sentence to stderr without a traceback and exits non-zero.
"""

from __future__ import annotations

import atexit
import gc
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


def skip_collection_at_exit() -> None:
    """Leave the interpreter's last garbage collections nothing to walk.

    After the atexit handlers, CPython tears its modules down with full collections over
    every object that torch, Ray, MLflow and scikit-learn made: about 3.5 s of each stage's
    exit on 2 cores (docs/benchmarks.md, "Process exit"), paid by every stage of a ``dvc
    repro`` and every ``gan`` command. By then every output is complete and closed and the
    handlers that flush (MLflow, logging, Ray's shutdown) have run; a frozen heap only skips
    the finalizers of objects in reference cycles, which Python does not promise at exit.
    """
    gc.disable()
    gc.freeze()


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

    # atexit runs the handlers that libraries register later (Ray's shutdown, MLflow's flush)
    # before this one; a frozen heap would not stop any of them, it only skips collections
    atexit.unregister(skip_collection_at_exit)  # once, also when run_main runs in-process again
    atexit.register(skip_collection_at_exit)
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
