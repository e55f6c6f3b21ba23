"""Members: add, look up, update, close. Each write is audited in its transaction. How agents
read them (`member list`, `member show`) is `views`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials.codes import revoke_emailed, revoke_pending
from cpms_admin.db import transaction
from cpms_admin.db_insert import insert_rows, take_ids
from cpms_admin.errors import Conflict, FieldError, InvalidInput, NotFound
from cpms_admin.letters.queue import letters_of
from cpms_admin.letters.voiding import void_printed
from cpms_admin.members import undeliverable
from cpms_admin.members.afnor import machine_line
from cpms_admin.members.fields import (
    COLUMNS,
    MemberFields,
    same_mailbox,
    validate_member_fields,
)
from cpms_admin.members.nir import format_nir, nir_to_find
from cpms_admin.members.postal import delivery_lines, same_destination
from cpms_admin.members.search import (
    SEARCH_COLUMNS,
    folded_columns,
    search_values,
)
from cpms_admin.models import Account, Letter, Member, pk
from cpms_admin.vocabulary import (
    AuditAction,
    CancelReason,
    LetterKind,
    LetterStatus,
    MemberStatus,
    RevokeReason,
)

_MEMBER = SQLModel.metadata.tables["member"]
_ACCOUNT = SQLModel.metadata.tables["account"]
_LETTER = SQLModel.metadata.tables["letter"]


def as_strings(row: Mapping[str, object]) -> dict[str, str | None]:
    """Member columns as text, as a typed option or a file row gives them."""
    return {
        name: value.isoformat()
        if isinstance(value, date)
        else (None if value is None else str(value))
        for name, value in row.items()
    }


def validate_stored_member(
    stored: Mapping[str, str | None], values: Mapping[str, str | None], *, envelope_given: bool
) -> MemberFields:
    """A stored member's new `values`, validated as `add` validates them. An envelope name
    was chosen for the name that did not fit (`Mme RAKOTONDRABE-ANDRIANAMPOINIMERINA`): one
    the new values did not give is dropped when they rename the member (letters to the new
    `Claire MARTIN` would bear the old name); if the new name does not fit either, the
    refusal asks for one. `member update` and `members import` both change members so."""
    fields = validate_member_fields(values)
    if envelope_given or not stored.get("envelope_name"):
        return fields
    after = as_strings(fields.as_row())
    if all(
        _same_name(after[name], stored[name]) for name in ("civility", "first_name", "last_name")
    ):
        return fields
    return validate_member_fields({**values, "envelope_name": None})


def _same_name(one: str | None, other: str | None) -> bool:
    """A name written in capitals or without its accents (a file from another system) is
    the same name: no reason to drop an envelope name chosen for it."""
    return machine_line(one or "") == machine_line(other or "")


def apply_fields(member: Member, fields: MemberFields, now: datetime) -> None:
    for name, value in fields.as_row().items():
        setattr(member, name, value)
    for name, value in search_values(member).items():
        setattr(member, name, value)
    member.updated_at = now


def get_member(session: Session, nir: str) -> Member:
    """The member with this NIR (any accepted spelling), or NotFound."""
    compact = nir_to_find(nir)
    member = session.exec(select(Member).where(Member.nir == compact)).first()
    if member is None:
        raise NotFound(f"no member with NIR {format_nir(compact)}")
    return member


def get_account(session: Session, member: Member, *, lock: bool = False) -> Account:
    """The member's account row; with `lock`, read afresh and held until the transaction
    ends (FOR UPDATE)."""
    account = session.get(Account, member.id, with_for_update=lock or None, populate_existing=lock)
    assert account is not None, "every member has an account row"
    return account


@dataclass(frozen=True)
class NewMember:
    """A member to create: the `member` table's values (the search columns included), a PIN hash
    carried over from another system, and whether to queue the enrolment letter."""

    values: Mapping[str, object]
    pin_hash: str | None = field(default=None, repr=False)
    welcome: bool = True

    @property
    def nir(self) -> str:
        return str(self.values["nir"])


MEMBER_COLUMNS = (*COLUMNS, *SEARCH_COLUMNS)


def member_row(fields: MemberFields) -> tuple[object, ...]:
    """The `member` table's values for valid fields, in MEMBER_COLUMNS order (the search
    columns included). A tuple: an import makes one for every row."""
    folded = folded_columns(fields.last_name, fields.first_name, fields.email, fields.address.city)
    return (*fields.column_values(), *folded)


def member_values(fields: MemberFields) -> dict[str, object]:
    """`member_row` by column name."""
    return dict(zip(MEMBER_COLUMNS, member_row(fields), strict=True))


def create_members(
    session: Session, new: Sequence[NewMember], *, now: datetime, imported: bool
) -> dict[str, int]:
    """The one way members come to be (`member add` and `members import`): the members,
    their accounts (with any carried-over PIN hash) and the enrolment letters asked for, in
    a few bulk statements of the caller's transaction (`insert_members`). The new members'
    ids by NIR. A NIR already taken raises IntegrityError."""
    if not new:
        return {}
    columns = tuple(new[0].values)
    ids = insert_members(
        session,
        columns=columns,
        rows=[tuple(row.values[name] for name in columns) for row in new],
        pin_hashes=[row.pin_hash for row in new],
        welcome=[row.welcome for row in new],
        now=now,
        imported=imported,
    )
    return {row.nir: member_id for row, member_id in zip(new, ids, strict=True)}


def insert_members(
    session: Session,
    *,
    columns: Sequence[str],
    rows: Sequence[tuple[object, ...]],
    pin_hashes: Sequence[str | None],
    welcome: Sequence[bool],
    now: datetime,
    imported: bool,
) -> list[int]:
    """`create_members` for rows already laid out as tuples of the `member` table's
    `columns` (an import's million rows are never dicts); the new ids, in order. `status`
    is active unless `columns` give it. Ids are taken first (SQLite: past the highest, under
    the write lock this transaction holds; PostgreSQL: from the sequence), so the rows go in
    by COPY or multi-row INSERTs (db_insert) with no RETURNING."""
    ids = take_ids(session, _MEMBER, len(rows))
    stamps: tuple[object, ...] = (now, now, now if imported else None)
    names = ["id", *columns, "created_at", "updated_at", "imported_at"]
    if "status" not in columns:
        names.append("status")
        stamps = (*stamps, MemberStatus.active)
    conn = session.connection()
    insert_rows(
        conn,
        _MEMBER,
        names,
        [(member_id, *row, *stamps) for member_id, row in zip(ids, rows, strict=True)],
    )
    insert_rows(
        conn,
        _ACCOUNT,
        ("member_id", "pin_hash", "pin_set_at", "failed_attempts", "captcha_required"),
        [
            (member_id, pin_hash, None if pin_hash is None else now, 0, False)
            for member_id, pin_hash in zip(ids, pin_hashes, strict=True)
        ],
    )
    letter = (
        LetterKind.welcome,
        LetterKind.welcome.fixed_purpose(),
        LetterStatus.pending,
        now,
    )
    insert_rows(
        conn,
        _LETTER,
        ("member_id", "kind", "purpose", "status", "created_at"),
        [(member_id, *letter) for member_id, wanted in zip(ids, welcome, strict=True) if wanted],
    )
    return ids


def add_member(
    session: Session,
    *,
    fields: MemberFields,
    agent: str,
    welcome: bool = True,
    clock: Clock = system_clock,
) -> Member:
    """Create a member and their account; queue the enrolment letter unless told not to."""
    with transaction(session):
        if session.exec(select(Member.id).where(Member.nir == fields.nir)).first() is not None:
            raise Conflict(f"member {format_nir(fields.nir)} already exists")
        now = clock()
        try:
            ids = create_members(
                session,
                [NewMember(member_values(fields), welcome=welcome)],
                now=now,
                imported=False,
            )
        except IntegrityError:  # another agent or an import added the same NIR just now
            raise Conflict(f"member {format_nir(fields.nir)} already exists") from None
        member = session.get(Member, ids[fields.nir])
        assert member is not None
        letters = letters_of(session, member_id=pk(member)) if welcome else []
        audit.record(
            session,
            agent=agent,
            action=AuditAction.member_add,
            member=member,
            at=now,
            welcome_letter_id=letters[0].id if letters else None,
        )
    return member


def update_member(
    session: Session,
    *,
    nir: str,
    changes: Mapping[str, str | None],
    agent: str,
    reason: str | None = None,
    clock: Clock = system_clock,
    address_confirmed: bool = False,
) -> "MemberUpdate":
    """Change some fields; the merged result goes through the same validation as `add`.

    A change to `None` clears an optional field (e.g. the e-mail). Changing the address, or
    `address_confirmed` (the member confirmed it as it is), lifts the undeliverable flag a
    returned letter set. Values equal to the member's change nothing and write no event.
    """
    unknown = set(changes) - (set(COLUMNS) - {"nir"})
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}")
    with transaction(session):
        why = _optional_reason(reason)
        member = get_member(session, nir)
        before = as_strings({name: getattr(member, name) for name in COLUMNS})
        fields = _validate_update(before, changes)
        after = as_strings(fields.as_row())
        changed = sorted(name for name in COLUMNS if after[name] != before[name])
        if not changed and not (address_confirmed and undeliverable.is_flagged(member)):
            return MemberUpdate(member, changed=[], undeliverable_cleared=False)
        delivered_to = delivery_lines(member)
        apply_fields(member, fields, clock())
        readdressed = not same_mailbox(before["email"], after["email"])
        update = _what_follows(
            session, member, delivered_to, readdressed, agent=agent, confirmed=address_confirmed
        )
        details: dict[str, Any] = {"changed": changed, "undeliverable_cleared": update.cleared}
        if update.revoked:
            details["emailed_codes_revoked"] = update.revoked
        audit.record(
            session,
            agent=agent,
            action=AuditAction.member_update,
            member=member,
            reason=why,
            at=member.updated_at,
            **details,
        )
    return MemberUpdate(
        member,
        changed=changed,
        undeliverable_cleared=update.cleared,
        voided=update.voided,
        emailed_codes_revoked=len(update.revoked),
        envelope_name_dropped="envelope_name" in changed and "envelope_name" not in changes,
    )


@dataclass(frozen=True)
class _Followed:
    cleared: bool
    voided: dict[int, int | None]
    revoked: list[int]


def _what_follows(
    session: Session,
    member: Member,
    delivered_to: Sequence[str],
    readdressed: bool,
    *,
    agent: str,
    confirmed: bool,
) -> _Followed:
    """What a member's new values undo: moved (a letter goes to another door: not a name,
    not the same words respelt), the undeliverable flag lifts and the letters on their way
    to the old door are voided; another mailbox stops the codes sent to the old one. Lifted
    too when the member confirmed the address as it is."""
    moved = not same_destination(delivery_lines(member), delivered_to)
    if moved:
        member.address_changed_at = member.updated_at
    cleared = undeliverable.clear(member) if moved or confirmed else False
    voided = (
        void_printed(session, [pk(member)], moved=True, agent=agent, now=member.updated_at)
        if moved
        else {}
    )
    revoked = [code for _, code in revoke_emailed(session, [pk(member)])] if readdressed else []
    return _Followed(cleared, voided, revoked)


def _validate_update(
    before: Mapping[str, str | None], changes: Mapping[str, str | None]
) -> MemberFields:
    """The merged fields, validated like `add`. A field stored before today's rules refused
    its value (an invisible character, a mis-decoded accent) is named as the stored one, so
    that the agent who changed something else knows what to correct in the same update."""
    try:
        return validate_stored_member(
            before, {**before, **changes}, envelope_given="envelope_name" in changes
        )
    except FieldError as error:
        if error.field in changes or not _refuses(before, error.field):
            raise
        raise FieldError(
            error.field,
            f"this member's stored {error.field} is refused by the current rules ({error}); "
            f"give a corrected {error.field} in the same update",
        ) from None


def _refuses(stored: Mapping[str, str | None], field: str) -> bool:
    try:
        validate_member_fields(stored)
    except FieldError as error:
        return error.field == field
    return False


@dataclass(frozen=True)
class MemberUpdate:
    """What `update_member` did: the fields it changed, whether it lifted the undeliverable
    flag (neither: nothing was written), the letters on their way to the address the
    member left that it voided (letter id -> the one queued again, or None), and how many
    codes e-mailed to the address replaced it revoked."""

    member: Member
    changed: list[str]
    undeliverable_cleared: bool
    voided: dict[int, int | None] = field(default_factory=dict)
    emailed_codes_revoked: int = 0
    envelope_name_dropped: bool = False  # chosen for the former name (validate_stored_member)

    @property
    def changed_anything(self) -> bool:
        return bool(self.changed) or self.undeliverable_cleared


def _optional_reason(reason: str | None) -> str | None:
    """A reason the agent may leave out (blank is none); given, it is checked like any."""
    if reason is None or not reason.strip():
        return None
    return audit.clean_text(reason, what="the reason", max_length=audit.REASON_MAX_LENGTH)


@dataclass(frozen=True)
class MemberClose:
    """What `close_member` did: `changed` is False when the member was closed already."""

    member: Member
    changed: bool


def close_member(
    session: Session, *, nir: str, reason: str, agent: str, clock: Clock = system_clock
) -> MemberClose:
    """Closed members cannot log in; their data is kept. Closing twice changes nothing (the
    first reason and time stay), and is audited as a `noop` with the agent's reason, as every
    agent action is."""
    if not reason.strip():
        raise InvalidInput("a reason is required to close a member")
    with transaction(session):
        why = audit.clean_text(reason, what="the reason", max_length=audit.REASON_MAX_LENGTH)
        member = get_member(session, nir)
        now = clock()
        if member.status == MemberStatus.closed:
            audit.record(
                session, agent=agent, action=AuditAction.member_close, member=member, reason=why,
                outcome="noop", at=now,
            )  # fmt: skip
            return MemberClose(member, changed=False)
        member.status, member.closed_reason, member.closed_at, member.updated_at = (
            MemberStatus.closed,
            why,
            now,
            now,
        )
        revoked = revoke_pending(session, member_id=pk(member), reason=RevokeReason.member_closed)
        cancelled = session.exec(
            update(Letter)
            .where(col(Letter.member_id) == pk(member), col(Letter.status) == LetterStatus.pending)
            .values(status=LetterStatus.cancelled, status_reason=CancelReason.member_closed.text)
            .returning(col(Letter.id))
        ).scalars()
        audit.record(
            session,
            agent=agent,
            action=AuditAction.member_close,
            member=member,
            reason=why,
            at=now,
            codes_revoked=len(revoked),
            letters_cancelled=sorted(cancelled),
        )
    return MemberClose(member, changed=True)
