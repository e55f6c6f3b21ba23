"""`cpms-admin members`: members in bulk, from and to files (migration scripts)."""

import bisect
import io
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, BinaryIO, TextIO

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import FILE_FORMATS, MEMBER_STATUSES, completes, not_stdout
from cpms_admin.cli.output import (
    BulkProgress,
    emit_object,
    exit_as,
    note_for_agent,
    stdout_failed,
    warn,
)
from cpms_admin.english import agree, count
from cpms_admin.errors import InvalidInput
from cpms_admin.private_files import remove_replaceable, reserved, write_private_atomically
from cpms_admin.vocabulary import OnConflict

if TYPE_CHECKING:
    from cpms_admin.bulk.formats import ErrorReport, RowError
    from cpms_admin.bulk.importer import ImportCounts

app = typer.Typer(
    help="Import and export members in bulk (CSV, JSON Lines or XLSX).", no_args_is_help=True
)

SHOWN_ERRORS = 10

Format = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="csv, jsonl or xlsx (default: from the file name and content).",
        autocompletion=FILE_FORMATS,
    ),
]


@contextmanager
def _private_text(path: Path, *, encoding: str = "utf-8") -> Iterator[TextIO]:
    """A file of personal data: complete or absent, owner-only, never through a planted link
    (`write_private_atomically`); a disk that fails is one line, not a traceback."""
    try:
        with write_private_atomically(path, encoding=encoding) as handle:
            yield handle
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


REPORT_ENCODING = "utf-8-sig"  # French Excel opens UTF-8 only with its BOM


@contextmanager
def _no_earlier_report(errors: Path | None) -> Iterator[None]:
    """A run refused or stopped before its `--errors` report was written leaves none: a report
    an earlier run left there would be read as this run's. Removed only if it was a report
    when the run began (its heading; a file named there by mistake is left alone), is still
    that file, and a run could have written its own there (not the database, the pepper,
    the file imported, a link...)."""
    earlier = _earlier_report(errors) if errors is not None else None
    try:
        yield
    except BaseException:
        if errors is not None and earlier is not None and remove_replaceable(errors, earlier):
            note_for_agent(f"{errors} removed: it held an earlier run's rejected rows")
        raise


def _earlier_report(path: Path) -> os.stat_result | None:
    """The regular file at `path`, as it stands, when it begins as a report does."""
    try:  # not following a link, never waiting on a pipe
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a directory cannot even be wrapped in a file object
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        return info if _begins_as_report(handle, path) else None


def _begins_as_report(handle: BinaryIO, path: Path) -> bool:
    """Whether the file open in `handle` has a report's heading: a CSV's first line, or a
    workbook's first row (whatever its name: a report was CSV before it could be one)."""
    from cpms_admin.bulk.rows import REPORT_COLUMNS
    from cpms_admin.bulk.sniff import ZIP_MAGIC

    heading = ",".join((*REPORT_COLUMNS, "")).encode(REPORT_ENCODING)
    start = handle.read(len(heading))
    if start == heading:
        return True
    if not start.startswith(ZIP_MAGIC):
        return False
    from cpms_admin.bulk.xlsx.read import header_in

    handle.seek(0)
    try:
        names = header_in(handle, path=path)
    except InvalidInput:  # no workbook after all, or none that can be read
        return False
    return tuple(names[: len(REPORT_COLUMNS)]) == REPORT_COLUMNS


def _names_a_workbook(path: Path) -> bool:
    """An `--errors` report named .xlsx is written as a workbook (any other name: CSV)."""
    return path.name.lower().endswith(".xlsx")


@contextmanager
def _error_report(path: Path | None, *, columns: tuple[str, ...]) -> Iterator["ErrorReport | None"]:
    """The `--errors` report (None without one), its rows written as they are rejected, into a
    private file that takes the name only once complete (`write_private_atomically`). CSV, or
    a workbook when so named: French Excel opens a `,` CSV as one column and turns its NIRs
    into numbers, a workbook in columns with every NIR whole."""
    if path is None:
        yield None
        return
    from cpms_admin.bulk.formats import ErrorReport

    workbook = _names_a_workbook(path)
    target: AbstractContextManager[IO[Any]] = (
        _private_binary(path) if workbook else _private_text(path, encoding=REPORT_ENCODING)
    )
    with target as out:
        report = ErrorReport(out, columns=columns, workbook=workbook)
        try:
            yield report
        except BaseException:
            report.abort()
            raise
        report.close()


@contextmanager
def _private_binary(path: Path) -> Iterator[BinaryIO]:
    """As _private_text, for a workbook."""
    try:
        with write_private_atomically(path) as handle:
            yield handle
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


@contextmanager
def _standard_output(*, binary: bool) -> Iterator[IO[Any]]:
    """Members for stdout, in UTF-8. A workbook is assembled in a private temporary file,
    then copied: stdout failing half-way leaves no archive half-written. (A reader that
    stopped early, or a full disk, is the error boundary's: cli/app.py.)"""
    if not binary:
        # UTF-8 as the formats say, whatever the locale's encoding (PYTHONIOENCODING, LANG)
        # would have made of it: Latin-1 without a word, or a traceback on the first `ễ`.
        if isinstance(sys.stdout, io.TextIOWrapper):  # not a StringIO of a caller's
            sys.stdout.reconfigure(encoding="utf-8", errors="strict")
        yield sys.stdout
        sys.stdout.flush()
        return
    with _temporary_workbook() as workbook:
        yield workbook
        workbook.seek(0)
        shutil.copyfileobj(workbook, sys.stdout.buffer)
        sys.stdout.flush()


@contextmanager
def _temporary_workbook() -> Iterator[BinaryIO]:
    """Where a workbook for stdout is assembled; its failure (a full TMPDIR) said as such."""
    try:
        with tempfile.TemporaryFile() as workbook:
            yield workbook
    except OSError as exc:
        if stdout_failed(exc):
            raise  # the copy to stdout failed, not the workbook
        raise InvalidInput(
            f"cannot assemble the workbook in {tempfile.gettempdir()} ({exc.strerror or exc}): "
            "give --out FILE.xlsx, or point TMPDIR at a directory with room"
        ) from None


_SAMPLE = 1 << 20


def _estimate_records(path: Path) -> int:
    """Lines in the file, for the progress bar: counted in its first MiB and extrapolated to
    its size, so a large file is not read once more just for this (a record may span lines:
    it is a guess either way)."""
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE)
    lines = sample.count(b"\n")
    if len(sample) < _SAMPLE or not lines:
        return lines
    return round(lines * path.stat().st_size / len(sample))


class _Rejected:
    """Rejected rows: each into the --errors report, those of the file's first lines kept
    for stderr (rows judged with their member's values are refused last)."""

    def __init__(self, report: "ErrorReport | None") -> None:
        self.report = report
        self.shown: list[RowError] = []

    def __call__(self, error: "RowError") -> None:
        if self.report is not None:
            self.report.write(error)
        bisect.insort(self.shown, error, key=lambda shown: shown.line)
        del self.shown[SHOWN_ERRORS:]


def _summary(counts: "ImportCounts") -> str:
    if counts.dry_run:
        n = counts.letters_voided
        where = agree(
            n,
            "its way to an address its member leaves",
            "their way to addresses their members leave",
        )
        voided = f" {count(n, 'letter')} on {where} would stop working." if n else ""
        return (
            f"Dry run, nothing written: would create {counts.created:,}, update "
            f"{counts.updated:,}, skip {counts.skipped:,} (already there), "
            f"reject {counts.invalid:,}.{voided}"
        )
    letters = (
        f" {count(counts.welcome_letters, 'welcome letter')} queued."
        if counts.welcome_letters
        else ""
    )
    return (
        f"Created {counts.created:,}, updated {counts.updated:,}, skipped "
        f"{counts.skipped:,} (already there), rejected {counts.invalid:,}.{letters}"
    )


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV with a header row, JSON Lines, or an .xlsx workbook.")
    ],
    fmt: Format = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would happen; write nothing.")
    ] = False,
    on_conflict: Annotated[
        str,
        typer.Option(
            "--on-conflict",
            help="Member already there: skip, update or fail.",
            autocompletion=completes(OnConflict),
        ),
    ] = "skip",
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            help="Write the rejected rows to this CSV file, or to a workbook if its name ends "
            "in .xlsx.",
            callback=not_stdout,
        ),
    ] = None,
    welcome_letters: Annotated[
        bool,
        typer.Option(
            "--welcome-letters",
            help="Queue an enrolment letter for each member created without a PIN hash.",
        ),
    ] = False,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="e.g. cp1252 (default: detected).")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV separator: ; , or tab (detected).")
    ] = None,
) -> None:
    """Import members: every row is checked like `member add`; bad rows are reported, the
    others imported, in batches. Running the same file again changes nothing.

    A workbook is read from its first sheet that is not hidden, whose first non-blank row
    names the columns. A closed member (status, closed_reason, closed_at) is imported closed.

    Exit 0 when every row was imported or skipped, 1 when some were rejected, 2 when the
    file cannot be read, 4 with --on-conflict fail when a member already exists.

    Example: cpms-admin members import adherents.csv --dry-run --errors rejets.csv
    """
    from cpms_admin.bulk.formats import read_member_rows
    from cpms_admin.bulk.importer import import_members

    app_ = app_context(ctx)
    app_.check_allowed()
    with _no_earlier_report(errors):
        # Read before it is reserved: the pepper or the database given by mistake is refused.
        member_file = read_member_rows(file, fmt=fmt, encoding=encoding, delimiter=delimiter)
        with reserved(file, "the file being imported"):
            # A workbook is zipped: its size says little of its rows, so its bar has no total.
            total = (
                None
                if member_file.fmt == "xlsx"
                else _estimate_records(file) - (member_file.fmt == "csv")
            )
            report_file = _error_report(errors, columns=member_file.report_columns)
            with report_file as report, BulkProgress("Importing", total=total) as progress:
                rejected = _Rejected(report)
                with app_.session() as session:
                    counts = import_members(
                        session,
                        member_file=member_file,
                        agent=app_.agent,
                        on_conflict=on_conflict,
                        dry_run=dry_run,
                        welcome_letters=welcome_letters,
                        on_error=rejected,
                        on_progress=lambda c: progress.update(
                            c.created + c.updated + c.skipped + c.invalid
                        ),
                        clock=app_.clock,
                    )
    _warn_rejected(rejected, counts, all_in_file=errors is not None)
    if rejected.report is not None and rejected.report.hashes_left_out:
        _warn_hashes_left_out(rejected.report, errors)
    _note_changes(counts)
    emit_object(app_, counts.as_json(), [_summary(counts)])
    exit_as(counts)


def _note_changes(counts: "ImportCounts") -> None:
    """What the agent should know of what the import changed beyond its counts."""
    if counts.civilities_recorded:
        n = counts.civilities_recorded
        note_for_agent(
            f"{count(n, 'row')} {agree(n, 'gives', 'give')} the civility Mlle or Mademoiselle, "
            "recorded as MME: letters say 'Madame' ('Mademoiselle' is no longer used in "
            "official correspondence)"
        )
    if counts.letters_voided and not counts.dry_run:  # a dry run's summary says it
        n, again = counts.letters_voided, counts.letters_queued_again
        note_for_agent(
            f"{count(n, 'letter')} {agree(n, 'was on its way', 'were on their way')} to an "
            "address the member has left: "
            f"{agree(n, 'its code no longer works', 'their codes no longer work')}"
            f"; {again:,} queued again for the new address (audit list --action letter.void)"
        )


def _warn_hashes_left_out(report: "ErrorReport", path: Path | None) -> None:
    n, named = report.hashes_left_out, report.lines_left_without_hash
    lines = ", ".join(map(str, named)) + (", ..." if len(named) < n else "")
    warn(
        f"{count(n, 'rejected row')} carried a PIN hash, which {path} leaves out "
        f"({agree(n, 'line', 'lines')} {lines}): imported from {path} once fixed, "
        f"{agree(n, 'its member', 'their members')} would have no PIN; fix "
        f"{agree(n, 'that row', 'those rows')} in the original file"
    )


def _warn_rejected(rejected: _Rejected, counts: "ImportCounts", *, all_in_file: bool) -> None:
    """The first rejected rows on stderr, and how many more there are."""
    for error in rejected.shown:
        warn(f"line {error.line}: {error.reason}")
    if counts.invalid > len(rejected.shown):
        more = "" if all_in_file else " (give --errors FILE to get them all)"
        rows = count(counts.invalid - len(rejected.shown), "more rejected row")
        warn(f"... and {rows}{more}")


@app.command("export")
def export(
    ctx: typer.Context,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv, jsonl or xlsx (default: from --out's name, else csv).",
            autocompletion=FILE_FORMATS,
        ),
    ] = None,
    excel: Annotated[
        bool,
        typer.Option(
            "--excel",
            help="A CSV that French Excel opens as is: UTF-8 with BOM, ';', CRLF, NIRs, "
            "postcodes and dates kept as text.",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (default, or -: stdout).")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Only active or closed members.", autocompletion=MEMBER_STATUSES
        ),
    ] = None,
) -> None:
    """Export members in the import columns (never a PIN hash), streaming, in NIR order,
    with their status: a closed member imports back closed.

    For people who open the file: --excel (a CSV that French Excel opens as is) or
    --format xlsx (a workbook; the better one to edit and import back). For scripts: the
    plain CSV or --format jsonl.

    Example: cpms-admin members export --format xlsx --out adherents.xlsx
    """
    from cpms_admin.bulk.export import check_status, export_members
    from cpms_admin.bulk.sniff import output_format

    app_ = app_context(ctx)
    out = None if out == Path("-") else out
    fmt = output_format(out, fmt)
    binary = fmt == "xlsx"
    if app_.json_output and out is None and fmt != "jsonl":
        raise InvalidInput(
            "--json prints the export's summary: give --out FILE, or stream the members as "
            "JSON Lines with --format jsonl"
        )
    if binary and out is None and sys.stdout.isatty():
        raise InvalidInput("an XLSX workbook is binary: give --out FILE.xlsx")
    target: AbstractContextManager[IO[Any]]
    check_status(status)
    app_.check_pepper()
    if out is None:
        app_.stdout_taken = True  # the members themselves, streamed
        target = _standard_output(binary=binary)
    else:
        target = _private_binary(out) if binary else _private_text(out)
    with target as stream, BulkProgress("Exporting") as progress, app_.session() as session:
        exported = export_members(
            session,
            out=stream,
            fmt=fmt,
            excel=excel,
            agent=app_.agent,
            status=status,
            path=str(out) if out else None,
            on_progress=progress.update,
            clock=app_.clock,
        )
    members = count(exported.members, "member")
    if out is None:  # stdout holds the members: the summary goes to stderr
        typer.echo(f"Exported {members}.", err=True)
        return
    emit_object(app_, exported.as_json(), [f"Exported {members} to {out}."])
