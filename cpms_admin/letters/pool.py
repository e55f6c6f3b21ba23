"""Render many PDF files on every core, one `LetterRenderer` per worker process.

Workers come from a forkserver, not a plain fork: the parent may hold a database connection
and threads, which a forked child would inherit; the forkserver is a clean process that has
already imported WeasyPrint and pikepdf, so starting a worker stays cheap. Workers only
render: they are given plain `LetterContent` values and file names, never a session.

A worker exits as soon as the process that started the pool is gone: a pool worker otherwise
waits for work forever, so every batch run killed with SIGKILL would leave idle workers (and,
through them, the forkserver) behind, still able to write into a directory being discarded.
"""

import itertools
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from cpms_admin.letters.pdf.content import LetterContent
from cpms_admin.letters.pdf.render import PageSpan, check_templates, renderer_for

Chunk = tuple[Path, Sequence[LetterContent]]
Rendered = tuple[Path, list[PageSpan]]

# Files queued per worker: enough to keep every core busy, few enough that the letters of
# a large batch are not all held in memory at once.
QUEUE_PER_WORKER = 2


def render_chunks(
    chunks: Iterable[Chunk],
    *,
    duplex: bool = False,
    workers: int = 1,
    letters_dir: Path | None = None,
) -> Generator[Rendered, None, None]:
    """Render each `(out_path, letters)` chunk into its own PDF, yielding in submission order.

    `chunks` is consumed lazily, so a caller can build each chunk only when it is needed.
    With `workers` > 1 and more than one chunk, files are rendered in a process pool.
    """
    pending = iter(chunks)
    head = [chunk for chunk in (next(pending, None), next(pending, None)) if chunk is not None]
    if not head:
        return
    if workers <= 1 or len(head) < 2:
        renderer = renderer_for(letters_dir)
        for out_path, letters in itertools.chain(head, pending):
            yield out_path, renderer.render(letters, out_path, duplex=duplex)
        return
    yield from _render_in_pool(
        head, pending, duplex=duplex, workers=workers, letters_dir=letters_dir
    )


def _render_in_pool(
    head: list[Chunk],
    pending: Iterator[Chunk],
    *,
    duplex: bool,
    workers: int,
    letters_dir: Path | None,
) -> Iterator[Rendered]:
    letters_dir = check_templates(letters_dir)  # a worker failing to start would say less
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["weasyprint", "pikepdf", __name__])
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(letters_dir, os.getpid()),
    )
    in_flight: deque[Future[Rendered]] = deque()
    try:
        for out_path, letters in itertools.chain(head, pending):
            with _stops_deferred():  # a submit may start a worker
                job = pool.submit(_render_file, out_path, tuple(letters), duplex, letters_dir)
            in_flight.append(job)
            if len(in_flight) >= QUEUE_PER_WORKER * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        # Also reached when the caller stops early: drop what has not started yet.
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _stops_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the block to end. A stop raised while a worker was being
    started, its start-up data half sent to the forkserver, left that worker unknown to the
    pool: it read on after the run had ended, and printed a traceback under the run's one
    `Error:` line. The stop then goes to the handler the block found (the CLI's: a clean
    stop), or, with none, does what the signal does."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals (and may set their handlers)
        return
    caught: list[signal.Signals] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {
        number: signal.signal(number, lambda n, _f: caught.append(signal.Signals(n)))
        for number in held
    }
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        if caught:
            handler = before[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])


def _start_worker(letters_dir: Path, owner_pid: int) -> None:
    threading.Thread(target=_exit_with, args=(owner_pid,), daemon=True).start()
    renderer_for(letters_dir)  # ready before the first file


def _exit_with(owner_pid: int) -> None:
    """Exit this worker at once when `owner_pid` ends (a pidfd on Linux, else polling)."""
    try:
        pidfd = os.pidfd_open(owner_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        while _alive(owner_pid):
            time.sleep(0.5)
        os._exit(1)
    select.select([pidfd], [], [])
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _render_file(
    out_path: Path, letters: Sequence[LetterContent], duplex: bool, letters_dir: Path
) -> Rendered:
    return out_path, renderer_for(letters_dir).render(letters, out_path, duplex=duplex)
