"""`cpms-admin member`: one member at a time."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.options import MEMBER_STATUSES, AllRows, Reason, not_stdout
from cpms_admin.cli.output import emit_object, emit_page, note_for_agent, warn, when
from cpms_admin.english import count
from cpms_admin.errors import InvalidInput
from cpms_admin.members.nir import format_nir
from cpms_admin.settings import LIMIT_MAX
from cpms_admin.vocabulary import AccountState, MemberStatus

if TYPE_CHECKING:
    from cpms_admin.members.records import MemberUpdate
    from cpms_admin.members.views import MemberView
    from cpms_admin.models import Member

app = typer.Typer(help="Add, show, list, update and close members.", no_args_is_help=True)

Nir = Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")]
LINE_2 = "Line 2: apartment, floor, 'chez'."
LINE_3 = "Line 3: building, residence."
LINE_5 = "Line 5: lieu-dit, boîte postale."
ENVELOPE = "Recipient line to print when the name does not fit shortened (38 chars max)."
ADDRESS_OPTIONS = {"address_complement", "address_building", "street", "locality"}
# What a letter's address block prints: the name line and the address.
PRINTED_OPTIONS = ADDRESS_OPTIONS | {
    "civility", "last_name", "first_name", "envelope_name", "postcode", "city", "country",
}  # fmt: skip


@app.command()
def add(
    ctx: typer.Context,
    nir: Annotated[str, typer.Option("--nir", help="Social security number.")],
    last_name: Annotated[str, typer.Option("--last-name")],
    first_name: Annotated[str, typer.Option("--first-name")],
    street: Annotated[str, typer.Option("--street", help="Line 4: number and street.")],
    postcode: Annotated[str, typer.Option("--postcode")],
    city: Annotated[str, typer.Option("--city")],
    civility: Annotated[
        str | None, typer.Option("--civility", help="M or MME (Mlle is recorded as MME).")
    ] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    birth_date: Annotated[str | None, typer.Option("--birth-date", help="YYYY-MM-DD.")] = None,
    address_complement: Annotated[
        str | None, typer.Option("--address-complement", help=LINE_2)
    ] = None,
    address_building: Annotated[str | None, typer.Option("--address-building", help=LINE_3)] = None,
    locality: Annotated[str | None, typer.Option("--locality", help=LINE_5)] = None,
    country: Annotated[str, typer.Option("--country", help="ISO 3166 code.")] = "FR",
    envelope_name: Annotated[str | None, typer.Option("--envelope-name", help=ENVELOPE)] = None,
    no_welcome: Annotated[
        bool, typer.Option("--no-welcome", help="Do not queue the enrolment letter.")
    ] = False,
) -> None:
    """Add a member and queue their enrolment letter (first-login security code by post).

    Example: cpms-admin member add --nir "1 85 05 78 006 084 91" --last-name Dupont
    --first-name Jean --street "12 rue de la Paix" --postcode 75002 --city Paris
    """
    from cpms_admin.members import records, views
    from cpms_admin.members.fields import validate_member_fields

    app_ = app_context(ctx)
    fields = validate_member_fields(
        {
            "nir": nir,
            "civility": civility,
            "last_name": last_name,
            "first_name": first_name,
            "birth_date": birth_date,
            "email": email,
            "street": street,
            "address_complement": address_complement,
            "address_building": address_building,
            "locality": locality,
            "postcode": postcode,
            "city": city,
            "country": country,
            "envelope_name": envelope_name,
        }
    )
    for note in fields.notes():
        note_for_agent(note)
    with app_.session() as session:
        member = records.add_member(
            session, fields=fields, agent=app_.agent, welcome=not no_welcome, clock=app_.clock
        )
        view = views.member_view(session, member, clock=app_.clock)
    _warn_if_unprintable(member)  # the session ended: no transaction held while it measures
    letter = " (enrolment letter queued)" if view.pending_letters else ""
    emit_object(app_, view.as_json(), [f"Added member {format_nir(member.nir)}{letter}."])


@app.command()
def show(ctx: typer.Context, nir: Nir) -> None:
    """Identity, contact, account state, pending codes and letters.

    Example: cpms-admin member show 185057800608491
    """
    from cpms_admin.members import records, views

    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        view = views.member_view(session, records.get_member(session, nir), clock=app_.clock)
    emit_object(app_, view.as_json(), describe(view))


def describe(view: "MemberView") -> list[str]:
    from cpms_admin.members import postal, undeliverable

    member, account = view.member, view.account
    lines = [
        f"{member.first_name} {member.last_name.upper()}   NIR {format_nir(member.nir)}"
        f"   [{member.status}]",
        f"  e-mail:   {member.email or '(none: codes go by post)'}",
        "  address:  " + " / ".join(postal.address_lines(member)),
        *(
            [f"  UNDELIVERABLE: {undeliverable.describe(member)}; fix: {undeliverable.fix(member)}"]
            if undeliverable.is_flagged(member)
            else []
        ),
        f"  account:  {view.state}, PIN {'set' if account.pin_hash else 'not set'}, "
        f"{count(account.failed_attempts, 'failed attempt')}"
        + (", CAPTCHA required" if account.captcha_required else "")
        + (
            f", cool-down until {when(account.locked_until)}"
            if view.state == AccountState.cooldown
            else ""
        ),
        f"  last login: {when(account.last_login_at) or 'never'};  terms accepted: "
        f"{account.terms_accepted_version or 'no'}",
    ]
    lines += [
        f"  pending code: {c.purpose} by {c.channel}, expires {when(c.expires_at)}"
        for c in view.pending_codes
    ]
    lines += [
        f"  pending letter: #{waiting.letter.id} {waiting.letter.kind}"
        + (" (the next print run cancels it)" if waiting.moot else "")
        for waiting in view.pending_letters
    ]
    return lines


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="active or closed.", autocompletion=MEMBER_STATUSES),
    ] = None,
    locked: Annotated[bool, typer.Option("--locked", help="Only locked or cooling down.")] = False,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            help="Words found in the names, e-mail or city, each of them, or a NIR's first "
            "digits; case, accents, apostrophes, hyphens and spaces inside a name do not "
            "matter.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=LIMIT_MAX)] = 50,
    all_rows: AllRows = False,
) -> None:
    """List members in name order (d'Arcy and de La Tour under D, Élodie under E), with filters.

    Example: cpms-admin member list --search "hélène martin" --limit 10
    """
    from cpms_admin.members import views

    if status not in (None, *MemberStatus):
        raise InvalidInput(f"--status must be active or closed, got {status!r}")
    app_ = app_context(ctx)
    with app_.session(read_only=True) as session:
        found = views.list_members(
            session,
            status=status,
            locked=locked,
            search=search,
            limit=None if all_rows else limit,
            clock=app_.clock,
        )
        shown = views.member_views(session, found, clock=app_.clock)
    if app_.json_output:
        emit_page(app_, found, [view.as_json() for view in shown], [])
        return
    table = [
        {
            "nir": view.member.nir,
            "name": f"{view.member.first_name} {view.member.last_name.upper()}",
            "email": view.member.email,
            "city": view.member.city,
            "state": view.state
            if view.member.status == MemberStatus.active
            else MemberStatus.closed,
        }
        for view in shown
    ]
    columns = [
        ("nir", "NIR"),
        ("name", "Name"),
        ("email", "E-mail"),
        ("city", "City"),
        ("state", "State"),
    ]
    emit_page(app_, found, table, columns)


@app.command()
def update(
    ctx: typer.Context,
    nir: Nir,
    email: Annotated[str | None, typer.Option("--email")] = None,
    clear_email: Annotated[bool, typer.Option("--clear-email", help="Forget the e-mail.")] = False,
    civility: Annotated[str | None, typer.Option("--civility")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    birth_date: Annotated[str | None, typer.Option("--birth-date")] = None,
    street: Annotated[str | None, typer.Option("--street")] = None,
    address_complement: Annotated[
        str | None, typer.Option("--address-complement", help=LINE_2)
    ] = None,
    address_building: Annotated[str | None, typer.Option("--address-building", help=LINE_3)] = None,
    locality: Annotated[str | None, typer.Option("--locality", help=LINE_5)] = None,
    postcode: Annotated[str | None, typer.Option("--postcode")] = None,
    city: Annotated[str | None, typer.Option("--city")] = None,
    country: Annotated[str | None, typer.Option("--country")] = None,
    envelope_name: Annotated[str | None, typer.Option("--envelope-name", help=ENVELOPE)] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
    address_confirmed: Annotated[
        bool,
        typer.Option(
            "--address-confirmed",
            help="The member confirmed the address as it is: letters may go there again "
            "after one came back undeliverable (NPAI).",
        ),
    ] = False,
) -> None:
    """Change a member's contact or identity; the result is validated like `member add`.

    Changing the address (or --address-confirmed) lifts the undeliverable flag that a
    returned letter set.

    Example: cpms-admin member update 185057800608491 --email jean@example.org --reason "phone call"
    """
    changes = _changes_asked(
        email=email,
        clear_email=clear_email,
        civility=civility,
        last_name=last_name,
        first_name=first_name,
        birth_date=birth_date,
        street=street,
        address_complement=address_complement,
        address_building=address_building,
        locality=locality,
        postcode=postcode,
        city=city,
        country=country,
        envelope_name=envelope_name,
    )
    if not changes and not address_confirmed:
        raise InvalidInput("nothing to change: give at least one option (see --help)")
    from cpms_admin.members import records, views

    app_ = app_context(ctx)
    with app_.session() as session:
        update = records.update_member(
            session,
            nir=nir,
            changes=changes,
            agent=app_.agent,
            reason=reason,
            clock=app_.clock,
            address_confirmed=address_confirmed,
        )
        member = update.member
        view = views.member_view(session, member, clock=app_.clock)
    if changes.keys() & PRINTED_OPTIONS:
        _warn_if_unprintable(member)
    for note in _update_notes(update, changes):
        if note:
            note_for_agent(note)
    shown = format_nir(member.nir)
    done = (
        f"Updated member {shown}."
        if update.changed_anything
        else f"Nothing to do: member {shown} already has these values."
    )
    emit_object(app_, view.as_json(), [done])


def _warn_if_unprintable(member: "Member") -> None:
    """The batch's own check, run as the agent types the address rather than at night: the
    member is saved, but every letter to them would fail until a line is shortened."""
    from cpms_admin.letters.views import why_unprintable

    if (why := why_unprintable(member)) is not None:
        warn(f"no letter to this address can be printed: {why}")


def _changes_asked(
    *, email: str | None, clear_email: bool, **fields: str | None
) -> dict[str, str | None]:
    """The fields `member update` was given, by name; the e-mail None when it is cleared."""
    if email is not None and clear_email:
        raise InvalidInput("use either --email or --clear-email, not both")
    if email is not None and not email.strip():  # `--email "$EMAIL"` with EMAIL unset
        raise InvalidInput("--email is empty: give the address, or --clear-email to forget it")
    changes: dict[str, str | None] = {
        name: value for name, value in {"email": email, **fields}.items() if value is not None
    }
    if clear_email:
        changes["email"] = None
    return changes


def _update_notes(update: "MemberUpdate", changes: dict[str, str | None]) -> list[str | None]:
    """What the agent should know after an update: the civility's, the new address's, the
    letters it voided, and an envelope name the new name made stale."""
    from cpms_admin.members import postal, undeliverable
    from cpms_admin.members.fields import civility_note

    member = update.member
    civility = changes.get("civility")
    notes = [civility_note(civility)] if civility else []
    if changes.keys() & ADDRESS_OPTIONS:
        notes += postal.postal_address(member).notes()
        if undeliverable.is_flagged(member):  # the address given is the one that failed
            notes.append(
                f"the address is still the one a letter came back from: "
                f"{undeliverable.describe(member)}; no letter goes there until it is "
                "corrected, or confirmed by the member (--address-confirmed)"
            )
    for letter_id, again in update.voided.items():
        instead = f"; letter #{again} is queued for the new one" if again else ""
        notes.append(
            f"letter #{letter_id} was on its way to the old address: its code no longer "
            f"works{instead}"
        )
    if update.emailed_codes_revoked:
        notes.append(
            "the code e-mailed to the former address no longer works: send a new one "
            "(cpms-admin code issue) if the member needs it"
        )
    if update.envelope_name_dropped:
        notes.append(
            "the envelope name chosen for the former name was dropped: letters bear the new "
            f"name ({postal.address_lines(member)[0]})"
        )
    return notes


@app.command()
def close(ctx: typer.Context, nir: Nir, reason: Reason) -> None:
    """Close a member: they can no longer log in; their data is kept.

    A member closed already stays as they were (the first reason and time); the attempt is
    audited as `noop`.

    Example: cpms-admin member close 185057800608491 --reason "left the mutual"
    """
    from cpms_admin.members import records, views

    app_ = app_context(ctx)
    with app_.session() as session:
        closing = records.close_member(
            session, nir=nir, reason=reason, agent=app_.agent, clock=app_.clock
        )
        member = closing.member
        view = views.member_view(session, member, clock=app_.clock)
    said = (
        f"Member {format_nir(member.nir)} is closed."
        if closing.changed
        else f"Member {format_nir(member.nir)} was closed already on {when(member.closed_at)} "
        f"({member.closed_reason}): nothing changed."
    )
    emit_object(app_, view.as_json(), [said])


@app.command()
def dossier(
    ctx: typer.Context,
    nir: Nir,
    out: Annotated[
        Path, typer.Option("--out", help="The file to write (JSON or PDF).", callback=not_stdout)
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="json or pdf (default: from the file's suffix)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the file if it exists (yours, not a link).")
    ] = False,
) -> None:
    """Write everything held on a member, for their right of access (GDPR article 15).

    Identity, contact, address, account state, the history of their codes (never a code or
    a hash), letters and e-mails, and the audit events about them (who acted is given as
    the portal or CPMS, not by name). JSON (stable keys, ISO times) or a French PDF. The file
    is owner-only; an existing one is replaced only with --force. Audited (member.dossier,
    with the format).

    Example: cpms-admin member dossier 185057800608491 --out dossier-dupont.pdf
    """
    from cpms_admin.privacy.dossier import write_dossier

    app_ = app_context(ctx)
    with app_.session() as session:
        written = write_dossier(
            session,
            nir=nir,
            out=out,
            fmt=fmt,
            force=force,
            settings=app_.settings,
            agent=app_.agent,
            clock=app_.clock,
        )
    what = ", ".join(
        count(written.counts[key], noun)
        for key, noun in (("codes", "code"), ("letters", "letter"), ("audit_events", "event"))
    )
    emit_object(
        app_,
        written.as_json(),
        [f"Dossier of {format_nir(written.nir)} written to {out} ({written.format}: {what})."],
    )
