"""Stopping a run from outside: Ctrl-C (SIGINT) and SIGTERM are handled the same way.

Python turns SIGINT into :class:`KeyboardInterrupt`.  :func:`handle_sigterm` makes SIGTERM
(what ``kill``, ``timeout``, systemd, Kubernetes and CI runners send) raise
:class:`Terminated`, a subclass of it, at the point where the main thread is.  Code that
already cleans up on Ctrl-C (the search stores whole generations only, so a resumed run
loses and repeats nothing) therefore cleans up on SIGTERM too, and
:func:`exit_status` gives the conventional shell status: 130 for SIGINT, 143 for SIGTERM
(128 + signal number).
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Terminated", "handle_sigterm", "exit_status", "signal_name"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""

    signum = int(signal.SIGTERM)


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


def handle_sigterm() -> bool:
    """Make SIGTERM raise :class:`Terminated` in the main thread.  Returns False (and does
    nothing) when called from another thread, where Python cannot install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)
    return True


def exit_status(exc: BaseException) -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def signal_name(exc: BaseException) -> str:
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C (SIGINT)"
