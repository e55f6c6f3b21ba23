"""`cpms-admin code`: one-time security codes, for one member (`issue`) or many (`campaign`)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import BulkProgress, emit_object, when
from cpms_admin.clock import parse_moment
from cpms_admin.english import agree, count
from cpms_admin.vocabulary import CampaignWording, Channel, ChannelChoice

if TYPE_CHECKING:
    from cpms_admin.bulk.campaign import CampaignCounts
    from cpms_admin.credentials.delivery import CodeDelivery

app = typer.Typer(help="Send one-time security codes.", no_args_is_help=True)


def delivery_line(delivery: "CodeDelivery") -> str:
    """Where the code went, for people: never the code itself."""
    if delivery.channel == Channel.email:
        until = when(delivery.as_json()["expires_at"])
        return f"a {delivery.purpose} code was e-mailed, valid until {until}."
    if delivery.letter_reused:
        return f"letter #{delivery.letter_id} already waiting will carry the code (next print run)."
    return f"letter #{delivery.letter_id} queued; its code is made when it is printed."


@app.command()
def issue(
    ctx: typer.Context,
    nir: Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")],
    channel: Annotated[
        ChannelChoice, typer.Option("--channel", help="auto: e-mail when known, else a letter.")
    ] = ChannelChoice.auto,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded in the audit log).")
    ] = None,
) -> None:
    """Send a new one-time code (first login if no PIN is set, else reset); older ones die.

    If the e-mail cannot be sent, the code is revoked and the command exits 1.

    Example: cpms-admin code issue 185057800608491 --channel post --reason "e-mail never arrived"
    """
    from cpms_admin.credentials import accounts

    app_ = app_context(ctx)
    with app_.session() as session:
        delivery = accounts.issue_member_code(
            session,
            nir=nir,
            channel=channel,
            agent=app_.agent,
            reason=reason,
            settings=app_.settings,
            clock=app_.clock,
        )
    emit_object(app_, delivery.as_json(), [f"Code sent: {delivery_line(delivery)}"])


def _lines(counts: "CampaignCounts") -> list[str]:
    verb = "Would queue" if counts.dry_run else "Queued"
    lines = [
        f"{verb} {count(counts.letters, 'letter')} and {count(counts.emails, 'e-mail')} "
        f"for {count(counts.selected, 'selected member')}."
    ]
    left_out = [
        (counts.already_pending, "already has", "already have", "a code on its way (letter, "
         "e-mail or live code)"),
        (counts.no_email, "has", "have", "no e-mail address"),
        (counts.undeliverable, "has", "have", "an address flagged undeliverable (a letter came "
         "back)"),
        (counts.closed, "is", "are", "closed"),
    ]  # fmt: skip
    lines += [
        f"  {count(n, 'member')} {agree(n, one, many)} {what}"
        for n, one, many, what in left_out
        if n
    ]
    if counts.unknown:
        n = counts.unknown
        lines.append(f"  {count(n, 'NIR')} of the file {agree(n, 'matches', 'match')} no member")
    if counts.dry_run:
        lines.append("Dry run: nothing was queued.")
    elif counts.emails:
        lines.append(
            "E-mails leave with the next `cpms-admin mail send`; letters with the "
            "next `cpms-admin letters batch`."
        )
    return lines


def campaign(
    ctx: typer.Context,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why (recorded in the audit log); not for --dry-run."),
    ] = None,
    never_logged_in: Annotated[
        bool, typer.Option("--never-logged-in", help="Members who never logged in.")
    ] = False,
    no_pin: Annotated[bool, typer.Option("--no-pin", help="Members without a PIN.")] = False,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="A file with one NIR per line.")
    ] = None,
    imported_since: Annotated[
        str | None,
        typer.Option(
            "--imported-since",
            help="Imported at or after (ISO: UTC, or Paris time followed by CET or CEST).",
        ),
    ] = None,
    channel: Annotated[
        ChannelChoice, typer.Option("--channel", help="auto: e-mail when known, else a letter.")
    ] = ChannelChoice.auto,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count who would get what; queue nothing.")
    ] = False,
    wording: Annotated[
        CampaignWording,
        typer.Option(
            "--wording",
            help="What the letters say: first_access (a first connection code) or migration "
            "(the move to the new portal).",
        ),
    ] = CampaignWording.first_access,
) -> None:
    """Queue a security code for every selected member (criteria combine: all must hold).

    Codes are made when the letters are printed or the e-mails sent, never stored in clear.
    Left out: closed members, and members with a letter or e-mail waiting or a live code
    (a new code would revoke theirs), so running a campaign again queues nothing twice.
    One campaign queues at a time: a second one exits 4 (a --dry-run may run beside it).

    --reason is required, except for a dry run (which changes nothing).

    Example: cpms-admin code campaign --no-pin --wording migration --dry-run
    """
    from cpms_admin.bulk.campaign import Selection, read_nir_file, run_campaign
    from cpms_admin.credentials.accounts import require_reason

    # A dry run changes nothing, so it needs no reason; one given is checked all the same,
    # so that a dry run refuses what the real run would.
    why = None if dry_run and reason is None else require_reason(reason, "run a campaign")
    app_ = app_context(ctx)
    selection = Selection(
        never_logged_in=never_logged_in,
        no_pin=no_pin,
        nirs=read_nir_file(from_file) if from_file else None,
        imported_since=parse_moment(imported_since, option="--imported-since")
        if imported_since
        else None,
    )
    with BulkProgress("Queuing codes") as progress, app_.session() as session:
        counts = run_campaign(
            session,
            selection=selection,
            channel=channel,
            reason=why,
            agent=app_.agent,
            dry_run=dry_run,
            wording=wording,
            clock=app_.clock,
            on_progress=lambda c: progress.update(c.selected),
        )
    emit_object(app_, counts.as_json(), _lines(counts))
