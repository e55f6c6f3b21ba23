"""`cpms-admin db` (create, migrate and inspect the schema) and `cpms-admin doctor`."""

from typing import Annotated

import typer

from cpms_admin import audit
from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object, emit_rows, exit_as, note_for_agent, warn
from cpms_admin.english import count

app = typer.Typer(help="Create, migrate and inspect the database schema.", no_args_is_help=True)


@app.command()
def upgrade(
    ctx: typer.Context,
    create_dirs: Annotated[
        bool,
        typer.Option(
            "--create-dirs",
            help="Create the SQLite file's folder, or a new pepper file's (mode 0700).",
        ),
    ] = False,
    seal_waiting: Annotated[
        bool,
        typer.Option(
            "--seal-waiting",
            help="Seal the audit events from before the chain that an interrupted upgrade "
            "left unsealed (only once you know they are genuine: docs/audit.md).",
        ),
    ] = False,
) -> None:
    """Create or migrate the schema to the latest revision (safe to run again).

    Then the pepper: checked against the fingerprint the database recorded (exit 5 if it is
    not this database's), recorded for a database that has none yet, or, for a SQLite
    database that holds no hash yet and has no pepper, created as the file `pepper` beside
    it (mode 0600). Never a second pepper for a database that has one. Then the audit
    events written before the audit chain existed are sealed into it (docs/audit.md), and
    PIN hashes imported before 3 December, stored as they came, are sealed with the pepper.

    Example: cpms-admin db upgrade
    """
    from cpms_admin.operations import schema

    app_ = app_context(ctx)
    with audit.labelled(app_.label):
        result = schema.upgrade(
            app_.settings,
            clock=app_.clock,
            create_dirs=create_dirs,
            seal_waiting_events=seal_waiting,
        )
    if result.pepper_created:
        warn(
            f"created the pepper file {result.pepper_created} (mode 0600): back it up, "
            "every PIN and code hash depends on it"
        )
    if result.events_sealed:
        note_for_agent(
            f"sealed {count(result.events_sealed, 'audit event')} written before the audit "
            "chain existed into it (docs/audit.md)"
        )
    if result.pin_hashes_sealed:
        note_for_agent(
            f"sealed {count(result.pin_hashes_sealed, 'imported PIN hash', 'imported PIN hashes')}"
            " stored as they came with the pepper (README, Migration scripts)"
        )
    done = (
        "already at the latest revision"
        if result.before == result.after
        else f"upgraded from {result.before or 'empty'} to {result.after}"
    )
    emit_object(app_, result.as_json(), [f"Schema {done}."])


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the current and the latest schema revision (exit 5 for a missing database).

    Example: cpms-admin db status
    """
    from cpms_admin.operations import schema

    app_ = app_context(ctx)
    state = schema.schema_status(app_.settings)
    emit_object(
        app_,
        state.as_json(),
        [
            f"current: {state.current or '(empty)'}",
            f"latest:  {state.latest}",
            state.advice,
        ],
    )


def doctor(ctx: typer.Context) -> None:
    """Check the database, pepper, templates, fonts, WeasyPrint and mail; say what to fix.

    Exit 0 when everything is in place, 5 otherwise.

    Example: cpms-admin doctor
    """
    from cpms_admin.operations.doctor import run_checks

    app_ = app_context(ctx)
    report = run_checks(app_.settings)
    human = [
        {**check.as_json(), "detail": check.detail + (f"  -> {check.fix}" if check.fix else "")}
        for check in report.checks
    ]
    emit_rows(
        app_,
        [check.as_json() for check in report.checks] if app_.json_output else human,
        [("status", ""), ("name", "Check"), ("detail", "Detail")],
    )
    exit_as(report)
