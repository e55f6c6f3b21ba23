"""Progress of a long bulk run, on stderr so stdout stays the result.

A rich bar on a terminal; otherwise (cron, pipes) a plain log line every few seconds, so
short runs stay quiet and long ones show they are alive.
"""

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class BulkProgress:
    def __init__(self, label: str, *, total: int | None = None, interval: float = 5.0) -> None:
        self._label = label
        self._total = total
        self._interval = interval
        self._tty = sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = time.monotonic()

    def update(self, done: int, detail: str = "") -> None:
        if self._tty:
            self._draw(done, detail)
        elif time.monotonic() - self._last_line >= self._interval:
            self._last_line = time.monotonic()
            of = f" of ~{self._total:,}" if self._total else ""
            typer.echo(f"{self._label}: {done:,}{of} {detail}".rstrip(), err=True)

    def _draw(self, done: int, detail: str) -> None:
        # Started on first use: nothing is drawn for a run that finishes at once, and no
        # refresh thread exists before a helper process is forked.
        if self._bar is None:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self._total)
        assert self._task is not None
        total = max(self._total or 0, done) or None
        self._bar.update(
            self._task,
            completed=done,
            total=total,
            description=(f"{self._label} {detail}".rstrip()),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "BulkProgress":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
