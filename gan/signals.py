"""SIGINT and SIGTERM end a stage the same way: temporary output removed, one sentence, 128 + signal.

    install()                      # run_main does this before a stage starts
    ...                            # Ctrl-C -> KeyboardInterrupt, SIGTERM -> Terminated
    received()                     # the signal that ended the run, or None

``timeout``, ``kill``, CI cancellation and Kubernetes send SIGTERM, whose default action
kills the process at once: no ``finally`` runs, so the atomic writers' temporary
directories stayed behind. Raising :class:`Terminated` (a KeyboardInterrupt) instead lets
every ``except BaseException`` cleanup run, exactly as for Ctrl-C.

Libraries replace these handlers: ``ray.init`` installs one that calls ``sys.exit(15)``,
Ray Train one that aborts its controller, Ray Tune one that stops the search
gracefully. :func:`install` is called again after ``ray.init``; :func:`record_around`
wraps a foreign handler so that the signal is still recorded, and the caller decides by
:func:`received` that the run was interrupted whatever the library did with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_installed: list[bool] = []


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM, so cleanup written for Ctrl-C runs for it too."""

    signum = signal.SIGTERM


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def install() -> None:
    """Handle SIGINT and SIGTERM with :func:`_handler` (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _handler)
    _installed.append(True)


def reinstall() -> None:
    """After ``ray.init`` (which installs ``sys.exit(15)`` for SIGTERM): ours again, if a stage installed them."""
    if _installed:
        install()


def record_around(signum: int) -> None:
    """Wrap the handler now installed for ``signum`` so that the signal is recorded first."""
    foreign: Any = signal.getsignal(signum)
    if foreign is _handler or not callable(foreign):
        return

    def recording(sig: int, frame: FrameType | None) -> None:
        _received.append(sig)
        foreign(sig, frame)

    signal.signal(signum, recording)


@contextlib.contextmanager
def sigint_as(stop_signal: int) -> Iterator[None]:
    """Within the block, the first SIGINT is recorded and sent on as ``stop_signal`` (a library's
    graceful stop, e.g. Ray Tune's SIGUSR1); a second one raises KeyboardInterrupt at once.

    Ray Tune's own Ctrl-C handler stops the search gracefully but records nothing, and
    ``fit()`` then returns as if the search had ended: the stage could not tell.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _received.append(signum)
        if _received.count(signal.SIGINT) > 1 or not callable(signal.getsignal(stop_signal)):
            raise KeyboardInterrupt()  # a second Ctrl-C, or the library's handler is not (yet) there
        os.kill(os.getpid(), stop_signal)

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def received() -> int | None:
    """The first SIGINT/SIGTERM this process received, or None."""
    return _received[0] if _received else None


def name(signum: int) -> str:
    """``SIGINT`` / ``SIGTERM``."""
    return signal.Signals(signum).name


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
    return 128 + int(signum)


def wrap_handler_registration(register: Callable[..., None]) -> Callable[..., None]:
    """``register`` (a library function that installs its own SIGINT handler), followed by
    :func:`record_around` for SIGINT and SIGTERM, so the signals stay visible to :func:`received`."""

    def wrapped(*args: Any, **kwargs: Any) -> None:
        register(*args, **kwargs)
        for signum in HANDLED:
            record_around(signum)

    return wrapped
