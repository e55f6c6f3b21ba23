"""Ctrl-C and SIGTERM stop a command cleanly, and the command says so, even where Python
drops the exception.

Python raises a signal's exception wherever the main thread is. Inside a garbage-collection
callback or a `__del__` (SQLAlchemy's pools and event registry have both), it is printed as
"Exception ignored" and dropped, and the run would carry on and exit 0. So the request is
also kept: a long run raises it again at its next step (`BulkProgress.update`), and the CLI,
when a command returns as if nothing happened, reports it with its exit code (130, or 143
for SIGTERM)."""

import signal

from cpms_admin.errors import Terminated

_requested: type[KeyboardInterrupt] | None = None


def install() -> None:
    """Handle both signals (the installed command's first step: its imports are stopped too),
    except one the caller ignores: a job started in the background by a script is not
    stopped by the Ctrl-C meant for the script."""
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _stop)


def _stop(signum: int, _frame: object) -> None:
    global _requested
    _requested = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    raise _requested


def requested() -> KeyboardInterrupt | None:
    """The interruption asked for, if any: raised once already, and perhaps dropped."""
    return None if _requested is None else _requested()


def described(stop: KeyboardInterrupt) -> tuple[str, int]:
    """What an interruption tells the user, and its exit code."""
    if isinstance(stop, Terminated):
        return "terminated (SIGTERM)", 143
    return "interrupted", 130


def check() -> None:
    """Raise the interruption asked for, if any, again."""
    if (stop := requested()) is not None:
        raise stop
