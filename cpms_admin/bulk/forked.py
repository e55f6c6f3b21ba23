"""An iterator computed in a forked child process, while the caller uses its items.

Parsing a workbook costs more per row than checking it (bench/xlsx.py); done beside the
import's checker, it overlaps it instead of adding to it. Items come back in order, in
batches, through a pipe whose small buffer keeps the child a batch or two ahead, so memory
stays flat. The child is forked with os.fork (the import's checker, itself a helper process,
may not start a multiprocessing one) and leaves with os._exit, running none of the parent's
clean-ups. If the caller stops early, the child is killed; if the caller dies, the child's
next send fails on the closed pipe and it exits.
"""

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from multiprocessing.connection import Connection
from typing import TypeVar

from cpms_admin.errors import CpmsError, Refused

T = TypeVar("T")
BATCH = 500


def _send_all(items: Iterable[object], sender: Connection) -> None:
    iterator = iter(items)
    try:
        while batch := list(islice(iterator, BATCH)):
            sender.send(batch)
        sender.send(None)
    except BrokenPipeError:
        pass  # the caller stopped reading: nothing left to do
    except CpmsError as exc:  # the input turned out unreadable: the caller raises it
        sender.send(exc)
    except Exception as exc:  # a bug: tell the caller rather than leave it waiting
        sender.send(Refused(f"the reading helper failed ({type(exc).__name__}: {exc})"))


def forked(produce: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of `produce()`, computed in a child process (in this one where there is no
    fork). An exception of the child's is raised here, as CpmsError."""
    if not hasattr(os, "fork"):
        yield from produce()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        status = 0
        try:
            _send_all(produce(), Connection(write_end, readable=False))
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    receiver = Connection(read_end, writable=False)
    finished = False
    try:
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                raise Refused("the reading helper process stopped unexpectedly") from None
            if message is None:
                finished = True
                return
            if isinstance(message, CpmsError):
                raise message
            yield from message
    finally:
        receiver.close()
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
