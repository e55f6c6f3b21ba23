"""`cpms-admin doctor`: checks what the nightly job needs."""

from dataclasses import asdict

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_rows
from cpms_admin.services.doctor import run_checks


def doctor(ctx: typer.Context) -> None:
    """Check the database, pepper, templates, fonts, WeasyPrint and mail; say what to fix.

    Exit 0 when everything is in place, 5 otherwise.

    Example: cpms-admin doctor
    """
    app_ = app_context(ctx)
    checks = run_checks(app_.settings)
    rows = [{**asdict(check), "status": "ok" if check.ok else "PROBLEM"} for check in checks]
    human = [
        {**row, "detail": row["detail"] + (f"  -> {row['fix']}" if row["fix"] else "")}
        for row in rows
    ]
    emit_rows(
        app_,
        rows if app_.json_output else human,
        [("status", ""), ("name", "Check"), ("detail", "Detail")],
    )
    if not all(check.ok for check in checks):
        raise typer.Exit(5)
