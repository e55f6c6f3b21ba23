"""The one output path: JSON with --json, a table on a terminal, plain text when piped; and
the progress of long bulk runs on stderr (a rich bar on a terminal, a plain log line every
few seconds otherwise, so stdout stays the result).
"""

import io
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import typer

from cpms_admin import db
from cpms_admin.audit import UNPRINTABLE
from cpms_admin.cli import signals
from cpms_admin.cli.context import AppContext
from cpms_admin.db import Page
from cpms_admin.french import agent_time
from cpms_admin.members.nir import format_nir

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from typing_extensions import Buffer


Columns = Sequence[tuple[str, str]]  # (key in the row, column title)


class HasExitCode(Protocol):
    @property
    def exit_code(self) -> int: ...


def exit_as(result: HasExitCode) -> None:
    """End a command that printed its result with the exit code the result carries (errors
    get theirs from the error boundary, cli/app.py): the one place results become codes."""
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def print_json(app: AppContext | None, data: Any) -> None:
    """The command's one JSON document on stdout (`app`: the command's, None when the
    command could not start)."""
    if app is not None:
        app.stdout_taken = True
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


class _Stdout(io.FileIO):
    """Descriptor 1, keeping the OSErrors writes to it raised (`stdout_failed`): an OSError
    that reaches the error boundary is then known to be stdout's (a full disk), not a file's
    or a bug's. (A writer's clean-up may fail on it again after the first.)"""

    failures: list[OSError] = []  # noqa: RUF012 (one stdout per process)

    def write(self, data: "Buffer", /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            _Stdout.failures.append(exc)
            raise


def watch_stdout() -> None:
    """sys.stdout rebuilt over `_Stdout`, with the same encoding and buffering."""
    old = sys.stdout
    if not isinstance(old, io.TextIOWrapper):
        return  # not the process's own stream: nothing to rebuild
    raw = _Stdout(old.fileno(), "w", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=old.line_buffering,
    )


def stdout_failed(exc: BaseException) -> bool:
    """Whether `exc` is (or was raised while handling) the failure of a write to stdout."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(seen is failure for failure in _Stdout.failures):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def silence_stdout() -> None:
    """Point stdout at /dev/null: its reader sees the end of it now, and nothing written
    after (what a failed stdout still holds: the exit's own flush must not fail again with a
    traceback) reaches it."""
    with suppress(OSError, ValueError):  # ValueError: a stdout with no descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


# What a value quoted in a message could use to break its line or drive the terminal:
# controls (escape sequences), invisible and bidi characters, line separators, and lone
# surrogates (undecodable bytes from the command line).
_UNSAFE_IN_A_LINE = re.compile(f"{UNPRINTABLE.pattern}|[\u2028\u2029\ud800-\udfff]")


def one_line(message: str) -> str:
    """`message` with each such character written as its escape (`\\n`, `\\x1b`)."""
    return _UNSAFE_IN_A_LINE.sub(
        lambda found: found[0].encode("unicode_escape", "backslashreplace").decode("ascii"),
        message,
    )


def error(message: str) -> None:
    typer.echo(f"Error: {one_line(message)}", err=True)


def warn(message: str) -> None:
    typer.echo(f"Warning: {one_line(message)}", err=True)


def note_for_agent(message: str) -> None:
    """Something the agent should know that is not a problem (stderr, never in the JSON)."""
    typer.echo(f"Note: {one_line(message)}", err=True)


def emit_object(app: AppContext, data: Any, lines: Sequence[str]) -> None:
    """One result: the JSON document, or the human lines."""
    if app.json_output:
        print_json(app, data)
        return
    for line in lines:
        typer.echo(line)


def emit_rows(
    app: AppContext, rows: list[dict[str, Any]], columns: Columns, *, title: str | None = None
) -> None:
    """A listing: a JSON list, a table on a terminal, tab-separated lines when piped."""
    if app.json_output:
        print_json(app, rows)
        return
    cells = [[_cell(key, row.get(key)) for key, _ in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        # A column empty on every row (no label, nothing printed yet) leaves its room to the
        # others; a pipe keeps every column, in place, for the scripts that cut them.
        shown = [i for i in range(len(columns)) if not cells or any(line[i] for line in cells)]
        headings = [columns[i][1] for i in shown]
        whole = [_read_whole(columns[i][0]) for i in shown]
        widest = [max(len(line[i]) for line in cells) if cells else 0 for i in shown]
        widths = _column_widths(headings, widest, whole, terminal=console.width)
        if widths is not None:
            table = Table(title=title, show_lines=False, header_style="bold")
            for heading, width, keep in zip(headings, widths, whole, strict=True):
                # a whole column is never cut nor wrapped; the others wrap at spaces, and
                # fold a word longer than the column
                table.add_column(heading, width=width, no_wrap=keep, overflow="fold")
            for line in cells:
                table.add_row(*(line[i] for i in shown))
            console.print(table)
            if not rows:
                typer.echo("(none)")
            return
        # Too narrow for a table: the lines a pipe gets, which the terminal wraps whole.
    typer.echo("\t".join(heading for _, heading in columns))
    for line in cells:
        typer.echo("\t".join(cell.replace("\t", " ") for cell in line))
    if not rows and sys.stdout.isatty():
        typer.echo("(none)")


def emit_page(
    app: AppContext,
    page: Page,
    rows: list[dict[str, Any]],
    columns: Columns,
    *,
    title: str | None = None,
) -> None:
    """A listing `page` gave `rows` for; when the limit cut it, the agent is told how much
    is missing on stderr (never in the JSON, whose readers count the list themselves)."""
    emit_rows(app, rows, columns, title=title)
    if page.total > len(page):
        total = f"{db.COUNT_CAP:,}+" if page.total > db.COUNT_CAP else f"{page.total:,}"
        typer.echo(f"{len(page):,} of {total} shown; --limit N or --all", err=True)


# Columns an agent copies or reads as one word: wrapping "47" as "4" over "7" makes another
# letter of it. Every other column folds to fit.
_WHOLE_KEYS = {"nir", "id", "at", "kind", "status", "outcome", "state", "action"}
_FOLDED_MIN = 4  # the narrowest a folded column can usefully be
_BORDERS = 3  # a table's separator and padding, per column (and one more at the end)


def _read_whole(key: str) -> bool:
    return key in _WHOLE_KEYS or key.endswith(("_id", "_at"))


def _column_widths(
    headings: Sequence[str], widest: Sequence[int], whole: Sequence[bool], *, terminal: int
) -> list[int] | None:
    """Each column's width in a table at most `terminal` wide: a whole column as wide as its
    widest cell; the others too when there is room, else narrowed, the widest first, down
    to their heading (or _FOLDED_MIN); None when even that does not fit. Decided here, for
    rich narrows the columns evenly and then widens those below their heading again, past
    the terminal's edge."""
    wanted = [max(cell, len(heading)) for heading, cell in zip(headings, widest, strict=True)]
    floors = [
        want if keep else max(len(heading), min(cell, _FOLDED_MIN))
        for heading, cell, keep, want in zip(headings, widest, whole, wanted, strict=True)
    ]
    room = terminal - _BORDERS * len(headings) - 1
    if sum(floors) > room:
        return None
    widths = list(wanted)
    while sum(widths) > room:
        at = max((i for i, width in enumerate(widths) if width > floors[i]), key=widths.__getitem__)
        widths[at] -= 1
    return widths


def _cell(key: str, value: Any) -> str:
    """A value as an agent reads it: a `nir` column grouped and whole (agents copy it into
    the next command), an `at` or `*_at` column in Paris time."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "nir":
        return format_nir(str(value))
    if key == "at" or key.endswith("_at"):
        return when(value)
    return str(value)


def when(moment: datetime | str | None) -> str:
    """A timestamp (or its ISO text from a JSON shape) in the agent's Paris time."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return agent_time(moment)


class BulkProgress:
    """A long run's progress on stderr. On a terminal, a bar redrawn at each step, and only
    then: no refresh thread (it could not be forked safely into worker processes, and would
    redraw a bar that has not moved), so it advances exactly as the work does. Off a terminal
    (cron), a plain line every `interval` seconds, none for a short run."""

    def __init__(self, label: str, *, total: int | None = None, interval: float = 5.0) -> None:
        self._label = label
        self._total = total
        self._interval = interval
        self._tty = sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = time.monotonic()

    def update(self, done: int, detail: str = "", *, total: int | None = None) -> None:
        """`done` of the run's steps (of `total`, when it is known only now). A Ctrl-C or
        SIGTERM dropped where it was raised (`signals`) stops the run here."""
        signals.check()
        if total is not None:
            self._total = total
        if self._tty:
            self._draw(done, detail)
        elif time.monotonic() - self._last_line >= self._interval:
            self._last_line = time.monotonic()
            of = f" of ~{self._total:,}" if self._total else ""
            typer.echo(f"{self._label}: {done:,}{of} {detail}".rstrip(), err=True)

    def _draw(self, done: int, detail: str) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True, auto_refresh=False)
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
        self._bar.refresh()

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
