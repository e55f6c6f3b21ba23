"""`cpms-admin letters`: the postal letter queue, the nightly batch, and previews."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cpms_admin.cli.context import AppContext, app_context
from cpms_admin.cli.options import AllRows, folder_given, not_stdout
from cpms_admin.cli.output import BulkProgress, emit_object, emit_page, warn
from cpms_admin.english import count
from cpms_admin.settings import LIMIT_MAX
from cpms_admin.vocabulary import LetterKind, LetterStatus, Wording

if TYPE_CHECKING:
    from cpms_admin.letters.batch import BatchSummary
    from cpms_admin.letters.claim import DryRun

app = typer.Typer(
    help="Postal letters: the queue, the nightly batch, previews.", no_args_is_help=True
)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        LetterStatus | None, typer.Option("--status", help="Only this status.")
    ] = None,
    nir: Annotated[str | None, typer.Option("--nir", help="Only this member's letters.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=LIMIT_MAX, help="At most N, newest first.")
    ] = 200,
    all_rows: AllRows = False,
) -> None:
    """List letters, newest first: pending, printed, cancelled (and why), failed (and why).

    Example: cpms-admin letters list --status cancelled
    """
    from cpms_admin.letters.views import list_letters

    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        rows = list_letters(
            session,
            status=status.value if status else None,
            nir=nir,
            limit=None if all_rows else limit,
        )
    columns = [
        ("id", "Id"),
        ("kind", "Kind"),
        ("status", "Status"),
        ("nir", "NIR"),
        ("created_at", "Queued"),
        ("batch_id", "Batch"),
        ("printed_at", "Printed"),
        ("status_reason", "Reason"),
    ]
    emit_page(app_, rows, [row.as_json() for row in rows], columns, title="Letters")


@app.command()
def batch(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory receiving the batch directory (made if missing, not its parents).",
            parser=folder_given,
            metavar="<path>",
            callback=not_stdout,
        ),
    ],
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, max=LIMIT_MAX, help="Take at most N letters from the queue."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count: issue no code, write nothing.")
    ] = False,
    duplex: Annotated[
        bool, typer.Option("--duplex", help="Pad each letter to an even number of pages.")
    ] = False,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, max=500, help="Letters per PDF file.")
    ] = 25,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Rendering processes (default: the cores, for large batches).",
        ),
    ] = None,
) -> None:
    """The nightly job: print every pending letter exactly once, into a new batch directory.

    Moot letters are cancelled (and listed as such); each letter's one-time code is made as it
    is rendered and exists in clear only in the PDF. The batch directory (mode 0700) holds the
    PDF files, manifest.json and index.csv; it appears, complete, only once the batch is
    committed. A run killed at any point is finished or undone by the next run. Exit 4 when
    another run holds the lock (SQLite), 5 when templates or the pepper are missing. A run
    with nothing to do prints nothing (unless --json); otherwise one summary line, with a
    progress bar on a terminal and plain log lines (dead runs settled, failed letters) off it.

    Example: cpms-admin letters batch --out /srv/print/outgoing
    """
    from cpms_admin.letters.batch import BatchHooks, BatchOptions, run_batch
    from cpms_admin.letters.batch import dry_run as count

    app_ = app_context(ctx)
    if dry_run:
        _report_dry_run(app_, count(engine=app_.engine(), out=out, limit=limit, clock=app_.clock))
        return
    options = BatchOptions(
        out=out, limit=limit, duplex=duplex, chunk_size=chunk_size, workers=workers
    )
    progress = _Progress()
    try:
        summary = run_batch(
            engine=app_.engine(),
            settings=app_.settings,
            agent=app_.agent,
            clock=app_.clock,
            options=options,
            hooks=BatchHooks(log=_log, progress=progress),
        )
    finally:
        progress.close()
    _report(app_, summary)


def _log(line: str) -> None:
    """What the summary does not say (dead runs settled, letters that failed), as plain lines
    for cron's log; not on a terminal, where the bar is drawn (the summary and the warnings
    say what matters there)."""
    if not sys.stderr.isatty():
        typer.echo(f"letters batch: {line}", err=True)


class _Progress:
    """A bar advancing per rendered file on a terminal, a line every few seconds under cron;
    started at the claim, when the number of letters is known."""

    def __init__(self) -> None:
        self._bar: BulkProgress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = BulkProgress("letters rendered", total=total)
        self._bar.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _report_dry_run(app_: AppContext, result: "DryRun") -> None:
    emit_object(
        app_,
        result.as_json(),
        [
            f"Pending letters: {result.pending}",
            f"Would cancel: {result.would_cancel}{_reasons(result.cancelled_by_reason)}",
            f"Would print: {result.would_print}",
            "(dry run: nothing was changed)",
        ],
    )


def _reasons(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{key.replace('_', ' ')}: {n}" for key, n in counts.items()) + ")"


def _report(app_: AppContext, summary: "BatchSummary") -> None:
    """Nothing at all for a run that changed nothing (cron mails any output), else one line;
    `--json` always prints its document."""
    if summary.failed:
        warn(
            f"{count(summary.failed, 'letter')} could not be printed: "
            "cpms-admin letters list --status failed"
        )
    if summary.idle and not app_.json_output:
        return
    emit_object(app_, summary.as_json(), [summary_line(summary)])


def summary_line(summary: "BatchSummary") -> str:
    """`Batch 3: 61 letters in 3 PDF files, 61 pages, in /srv/print/batch-3-...; cancelled 2
    moot letters (has pin: 2).`"""
    if summary.batch_id is None:
        parts = ["Nothing to print"]
    else:
        parts = [
            f"Batch {summary.batch_id}: {count(summary.printed, 'letter')} in "
            f"{count(len(summary.files), 'PDF file')}, {count(summary.pages, 'page')}, in "
            f"{summary.directory}"
        ]
    if summary.cancelled:
        moot = count(summary.cancelled, "moot letter")
        parts.append(f"cancelled {moot}{_reasons(summary.cancelled_by_reason)}")
    recovered = summary.recovered
    if recovered.abandoned:
        undone = count(len(recovered.abandoned), "dead run")
        parts.append(f"undid {undone} ({count(recovered.released, 'letter')} back in the queue)")
    if recovered.published:
        finished = count(len(recovered.published), "interrupted batch", "interrupted batches")
        parts.append(f"finished {finished}: {', '.join(recovered.published)}")
    return "; ".join(parts) + "."


@app.command()
def preview(
    ctx: typer.Context,
    kind: Annotated[LetterKind, typer.Argument(help="welcome, security_code or pin_reset.")],
    out: Annotated[Path, typer.Option("--out", help="The PDF file to write.", callback=not_stdout)],
    nir: Annotated[
        str | None, typer.Option("--nir", help="Address it to this member (issues nothing).")
    ] = None,
    wording: Annotated[
        Wording | None,
        typer.Option(
            "--wording",
            help="Why it is sent (default: the kind's own; a campaign's: first_access, migration).",
        ),
    ] = None,
) -> None:
    """Render a SPÉCIMEN letter with a dummy code, to check the layout; issues nothing.

    Without --nir no database is needed.

    Example: cpms-admin letters preview security_code --wording migration --out sample.pdf
    """
    from cpms_admin.letters.views import preview_letter

    app_ = app_context(ctx)
    chosen = wording.value if wording else None
    if nir is None:
        result = preview_letter(
            kind=kind.value, out=out, settings=app_.settings, clock=app_.clock, wording=chosen
        )
    else:
        with app_.session(read_only=True) as session:
            result = preview_letter(
                kind=kind.value,
                out=out,
                settings=app_.settings,
                clock=app_.clock,
                session=session,
                nir=nir,
                wording=chosen,
            )
    emit_object(
        app_, result.as_json(), [f"Preview written to {out} ({count(result.pages, 'page')})."]
    )


@app.command()
def returned(
    ctx: typer.Context,
    letter: Annotated[
        str | None, typer.Argument(help="The letter: its id (12) or reference (L00000012).")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="The print house's CSV of returns: a letter_id or reference column, and "
            "optionally reason (or motif).",
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option("--encoding", help="Of --from-file, e.g. cp1252 (default: detected)."),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is recorded (audited).")
    ] = "NPAI returned by the post",  # letters.returns.RETURNED_BY_POST (a test holds them equal)
) -> None:
    """Record letters that came back undeliverable (NPAI): each letter's code is revoked and
    the member's address is flagged undeliverable (member show, account status), so no letter
    goes there until an agent updates it (member update). Recording one twice changes nothing.

    Example: cpms-admin letters returned L00000012
    """
    from cpms_admin.credentials.accounts import require_reason
    from cpms_admin.errors import InvalidInput
    from cpms_admin.letters.returns import Return, letter_id, read_returns_file, record_returns
    from cpms_admin.pepper import load_peppers

    if (letter is None) == (from_file is None):
        raise InvalidInput("give one letter, or --from-file with the print house's returns")
    if encoding is not None and from_file is None:
        raise InvalidInput("--encoding is for --from-file")
    app_ = app_context(ctx)
    app_.check_allowed()
    returns = (
        read_returns_file(from_file, encoding=encoding)
        if from_file
        else [Return(letter_id(letter or ""))]
    )
    with app_.session() as session:
        result = record_returns(
            session,
            returns=returns,
            peppers=load_peppers(app_.settings),
            agent=app_.agent,
            reason=require_reason(reason, "record a returned letter"),
            clock=app_.clock,
        )
    lines = [
        f"Recorded {count(len(result.returned), 'returned letter')}; "
        f"{count(result.codes_revoked, 'code')} revoked; "
        f"{count(result.members_flagged, 'address', 'addresses')} flagged undeliverable."
    ]
    if result.already_returned:
        lines.append(f"Already recorded: {len(result.already_returned)}.")
    if result.letters_voided:
        listed = ", ".join(f"#{letter_id}" for letter_id in result.letters_voided)
        lines.append(f"Also on their way to an address now flagged, their codes revoked: {listed}.")
    if result.address_changed_since:
        listed = ", ".join(f"#{letter_id}" for letter_id in result.address_changed_since)
        lines.append(
            f"Not flagged, the member's address has changed since it was printed: {listed}."
        )
    emit_object(app_, result.as_json(), lines)
