"""`cpms-admin account`: why a member cannot log in, and unlocking them."""

from typing import TYPE_CHECKING, Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import Reason
from cpms_admin.cli.output import emit_object, when
from cpms_admin.english import count
from cpms_admin.members.nir import format_nir
from cpms_admin.vocabulary import AccountState

if TYPE_CHECKING:
    from cpms_admin.credentials.account_status import AccountStatus

app = typer.Typer(help="See why a member cannot log in; unlock them.", no_args_is_help=True)

Nir = Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")]


@app.command()
def status(ctx: typer.Context, nir: Nir) -> None:
    """State, counters, code and letter in flight, and a diagnosis with the command to run.

    Example: cpms-admin account status 185057800608491
    """
    from cpms_admin.credentials import account_status

    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        status_ = account_status.account_status(
            session, nir=nir, settings=app_.settings, clock=app_.clock
        )
    emit_object(app_, status_.as_json(), describe(status_))


def describe(status: "AccountStatus") -> list[str]:
    member, account = status.member, status.account
    pin = (
        "not set"
        if account.pin_hash is None
        else "set (previous system)"
        if status.pin_legacy
        else "set"
    )
    lines = [
        f"NIR {format_nir(member.nir)}   member {member.status}, account {status.state}",
        f"  PIN {pin}; {count(account.failed_attempts, 'failed attempt')}"
        + ("; CAPTCHA required" if account.captcha_required else "")
        + (
            f"; cool-down until {when(account.locked_until)}"
            if status.state == AccountState.cooldown
            else ""
        )
        + (f"; hard lock since {when(account.hard_locked_at)}" if account.hard_locked_at else ""),
        f"  last login: {when(account.last_login_at) or 'never'};  e-mail: "
        f"{'known' if member.email is not None else 'none'};  terms accepted: "
        f"{account.terms_accepted_version or 'no'}",
    ]
    code = status.code
    if code:
        lines.append(
            f"  code in flight: {code.purpose} by {code.channel}, valid until "
            f"{when(code.expires_at)}, {count(status.code_tries_left, 'try', 'tries')} left"
        )
    lines += [
        f"  letter waiting: #{waiting.letter.id} {waiting.letter.kind}"
        + (" (the next print run cancels it)" if waiting.moot else "")
        for waiting in status.pending_letters
    ]
    lines.append("Diagnosis:")
    lines += [f"  - {finding}" for finding in status.diagnosis]
    if status.fix:
        lines.append(f"Fix: {status.fix}")
    return lines


@app.command()
def unlock(ctx: typer.Context, nir: Nir, reason: Reason) -> None:
    """Clear the failures, cool-down, CAPTCHA flag and hard lock (exit 0 if not locked).

    Example: cpms-admin account unlock 185057800608491 --reason "identity checked by phone"
    """
    from cpms_admin.credentials import accounts

    app_ = app_context(ctx)
    with app_.session() as session:
        result = accounts.unlock_account(
            session, nir=nir, agent=app_.agent, reason=reason, clock=app_.clock
        )
    shown = format_nir(result.member.nir)
    line = (
        f"Unlocked {shown} (was {result.state_before}, "
        f"{count(result.failed_attempts_before, 'failed attempt')})."
        if result.changed
        else f"Nothing to do: {shown} is not locked ({result.state_before})."
    )
    emit_object(app_, result.as_json(), [line])
