"""`cpms-admin pin`: resetting a member's PIN."""

from typing import Annotated

import typer

from cpms_admin.cli.commands.code import delivery_line
from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object
from cpms_admin.vocabulary import ChannelChoice

app = typer.Typer(help="Reset a member's PIN.", no_args_is_help=True)


@app.command()
def reset(
    ctx: typer.Context,
    nir: Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
    channel: Annotated[
        ChannelChoice, typer.Option("--channel", help="auto: e-mail when known, else a letter.")
    ] = ChannelChoice.auto,
) -> None:
    """Invalidate the PIN at once and send a one-time code to set a new one.

    If the e-mail cannot be sent, the code is revoked and the command exits 1: send one by
    post with `cpms-admin code issue NIR --channel post`.

    Example: cpms-admin pin reset 185057800608491 --channel auto --reason "forgot PIN"
    """
    from cpms_admin.credentials import accounts

    app_ = app_context(ctx)
    with app_.session() as session:
        reset = accounts.reset_pin(
            session,
            nir=nir,
            channel=channel,
            agent=app_.agent,
            reason=reason,
            settings=app_.settings,
            clock=app_.clock,
        )
    emit_object(
        app_, reset.as_json(), [f"PIN reset: {reset.pin_before}; {delivery_line(reset.sent)}"]
    )
