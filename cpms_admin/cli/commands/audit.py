"""`cpms-admin audit`: read the audit log, and check that no one rewrote it."""

from pathlib import Path
from typing import Annotated

import typer

from cpms_admin import audit, audit_chain
from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import AllRows, completes
from cpms_admin.cli.output import emit_object, emit_page, error, exit_as, warn
from cpms_admin.clock import parse_moment
from cpms_admin.members.nir import nir_to_find
from cpms_admin.settings import LIMIT_MAX
from cpms_admin.vocabulary import AuditAction

app = typer.Typer(help="Read the audit log; check its chain.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    nir: Annotated[str | None, typer.Option("--nir", help="Only this member.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="ISO date or time: UTC, or Paris time as the When column shows it "
            "('2026-12-04 19:09 CET').",
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="e.g. account.unlock", autocompletion=completes(AuditAction)),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=LIMIT_MAX)] = 50,
    all_rows: AllRows = False,
) -> None:
    """Audit events, newest first.

    Example: cpms-admin audit list --nir 185057800608491 --since 2026-11-01
    """
    app_ = app_context(ctx)
    since_at = parse_moment(since, option="--since") if since else None
    member_nir = nir_to_find(nir) if nir is not None else None
    with app_.session(read_only=True) as session:
        rows = audit.list_events(
            session,
            nir=member_nir,
            since=since_at,
            action=action,
            limit=None if all_rows else limit,
        )
        unrecorded = audit.unrecorded_action(session, action) if action and not rows else None
    if unrecorded:
        warn(unrecorded)
    columns = [
        ("id", "#"),
        ("at", "When"),
        ("agent", "Agent"),
        ("label", "Label"),
        ("action", "Action"),
        ("nir", "NIR"),
        ("outcome", "Outcome"),
        ("reason", "Reason"),
        # Last, so that the columns scripts cut from the tab-separated lines keep their place.
        ("agent_changed", "Agent changed"),
    ]
    shown = [
        row.as_json() if app_.json_output else {**row.as_json(), "agent_changed": row.agent_changed}
        for row in rows
    ]
    emit_page(app_, rows, shown, columns)


@app.command("verify")
def verify(
    ctx: typer.Context,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            help="Check an archive file written by purge instead of the database.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Check that the audit log is as it was written: walk the chain of sealed events.

    Exit 0 when it is intact; 1 naming the first event changed, deleted or inserted out of
    order (one line on stderr). --json prints {"ok", "checked", "first_bad_id",
    "first_bad_seq", "problem", "message", "anchor_seq", "anchor_hash", "head_seq",
    "head_hash"} either way. See docs/audit.md for what it can and cannot detect.

    Example: cpms-admin audit verify --json
    """
    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        report = (
            audit_chain.verify_chain(session)
            if archive is None
            else audit_chain.verify_archive(session, archive)
        )
    if app_.json_output or report.ok:
        emit_object(app_, report.as_json(), [report.message])
    if not report.ok:
        error(report.message)
    exit_as(report)
