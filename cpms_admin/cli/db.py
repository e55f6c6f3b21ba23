"""`cpms-admin db`: create, migrate and inspect the schema."""

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object, warn
from cpms_admin.services import schema

app = typer.Typer(help="Create, migrate and inspect the database schema.", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or migrate the schema to the latest revision (safe to run again).

    Also creates data/pepper (mode 0600) when neither CPMS_PEPPER nor CPMS_PEPPER_FILE is set.

    Example: cpms-admin db upgrade
    """
    app_ = app_context(ctx)
    result = schema.upgrade(app_.settings, agent=app_.agent)
    if result.pepper_created:
        warn(
            f"created the pepper file {result.pepper_created} (mode 0600): back it up, "
            "every PIN and code hash depends on it"
        )
    done = (
        "already at the latest revision"
        if result.before == result.after
        else f"upgraded from {result.before or 'empty'} to {result.after}"
    )
    emit_object(
        app_,
        {
            "before": result.before,
            "after": result.after,
            "pepper_created": str(result.pepper_created) if result.pepper_created else None,
        },
        [f"Schema {done}."],
    )


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the current and the latest schema revision.

    Example: cpms-admin db status
    """
    app_ = app_context(ctx)
    state = schema.schema_status(app_.settings)
    emit_object(
        app_,
        {"current": state.current, "latest": state.latest, "up_to_date": state.up_to_date},
        [
            f"current: {state.current or '(empty)'}",
            f"latest:  {state.latest}",
            "up to date" if state.up_to_date else "run cpms-admin db upgrade",
        ],
    )
