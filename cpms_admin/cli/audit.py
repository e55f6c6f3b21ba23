"""`cpms-admin audit`: read the audit log."""

from typing import Annotated

import typer

from cpms_admin import audit
from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import AllRows
from cpms_admin.cli.output import emit_page
from cpms_admin.clock import parse_moment
from cpms_admin.settings import LIMIT_MAX

app = typer.Typer(help="Read the audit log.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    nir: Annotated[str | None, typer.Option("--nir", help="Only this member.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date or time (UTC).")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. account.unlock")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=LIMIT_MAX)] = 50,
    all_rows: AllRows = False,
) -> None:
    """Audit events, newest first.

    Example: cpms-admin audit list --nir 185057800608491 --since 2026-11-01
    """
    app_ = app_context(ctx)
    since_at = parse_moment(since, option="--since") if since else None
    with app_.session(read_only=True) as session:
        rows = audit.list_events(
            session, nir=nir, since=since_at, action=action, limit=None if all_rows else limit
        )
    columns = [
        ("id", "#"),
        ("at", "When"),
        ("agent", "Agent"),
        ("label", "Label"),
        ("action", "Action"),
        ("nir", "NIR"),
        ("outcome", "Outcome"),
        ("reason", "Reason"),
    ]
    emit_page(app_, rows, rows, columns)
