"""`cpms-admin code`: one-time security codes."""

from enum import StrEnum
from typing import Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object
from cpms_admin.services import accounts
from cpms_admin.services.notify import CodeDelivery

app = typer.Typer(help="Send one-time security codes.", no_args_is_help=True)


class Channel(StrEnum):
    auto = "auto"
    email = "email"
    post = "post"


def delivery_line(delivery: CodeDelivery) -> str:
    """Where the code went, for people: never the code itself."""
    if delivery.channel == "email":
        until = delivery.as_json()["expires_at"]
        return f"a {delivery.purpose} code was e-mailed, valid until {until}."
    if delivery.letter_reused:
        return f"letter #{delivery.letter_id} already waiting will carry the code (next print run)."
    return f"letter #{delivery.letter_id} queued; its code is made when it is printed."


@app.command()
def issue(
    ctx: typer.Context,
    nir: Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")],
    channel: Annotated[
        Channel, typer.Option("--channel", help="auto: e-mail when known, else a letter.")
    ] = Channel.auto,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded in the audit log).")
    ] = None,
) -> None:
    """Send a new one-time code (first login if no PIN is set, else reset); older ones die.

    If the e-mail cannot be sent, the code is revoked and the command exits 1.

    Example: cpms-admin code issue 185057800608491 --channel post --reason "e-mail never arrived"
    """
    app_ = app_context(ctx)
    with app_.session() as session:
        delivery = accounts.issue_member_code(
            session,
            nir=nir,
            channel=channel.value,
            agent=app_.agent,
            reason=reason,
            settings=app_.settings,
            clock=app_.clock,
        )
    emit_object(app_, delivery.as_json(), [f"Code sent: {delivery_line(delivery)}"])
