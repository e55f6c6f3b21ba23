"""`cpms-admin agent`: who may run commands, with which role."""

from typing import Annotated

import typer

from cpms_admin.agents.roles import Role
from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import Reason
from cpms_admin.cli.output import emit_object, emit_rows

app = typer.Typer(help="Agents and their roles (support, supervisor, admin).", no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The OS user (SQLite) or login role (PostgreSQL).")],
    role: Annotated[Role, typer.Option("--role", help="What they may do (README).")],
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Why (recorded in the audit log), e.g. why a disabled agent is enabled again.",
        ),
    ] = None,
) -> None:
    """Add an agent, or give an existing one a new role (enabling them again).

    On PostgreSQL the login role must exist (a DBA creates it); it is made a member of the
    role's group in this database (cpms_support@<database>, ...), so the database enforces
    the same rights, and its rights in another database of the cluster are left alone.

    Example: cpms-admin agent add alice --role support
    """
    from cpms_admin.agents import registry

    app_ = app_context(ctx)
    with app_.session() as session:
        change = registry.add_agent(
            session, name=name, role=role, actor=app_.agent, now=app_.clock(), reason=reason
        )
    line = (
        f"Nothing to do: {change.name} is already {change.role}."
        if not change.changed
        else f"Added {change.name} as {change.role}."
        if change.before is None
        else f"{change.name} is now {change.role} (was {change.before})."
    )
    emit_object(app_, change.as_json(), [line])


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every agent, their role, and whether they are disabled.

    Example: cpms-admin agent list
    """
    from cpms_admin.agents import registry

    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        agents = registry.list_agents(session)
    emit_rows(
        app_,
        [agent.as_json() for agent in agents],
        [
            ("name", "Agent"),
            ("role", "Role"),
            ("added_at", "Added"),
            ("added_by", "By"),
            ("disabled_at", "Disabled"),
            ("disabled_reason", "Why"),
        ],
    )


@app.command()
def disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The agent to disable.")],
    reason: Reason,
) -> None:
    """Refuse every command to an agent from now on (their audit trail stays).

    Example: cpms-admin agent disable bob --reason "left the company"
    """
    from cpms_admin.agents import registry

    app_ = app_context(ctx)
    with app_.session() as session:
        change = registry.disable_agent(
            session, name=name, reason=reason, actor=app_.agent, now=app_.clock()
        )
    line = (
        f"Nothing to do: {change.name} is already disabled."
        if not change.changed
        else f"Disabled {change.name} (was {change.before})."
    )
    emit_object(app_, change.as_json(), [line])
