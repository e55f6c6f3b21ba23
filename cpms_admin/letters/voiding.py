"""Letters on their way to an address that no longer holds: printed, their code stored and
still pending, for an address the member has since left, or that a returned letter showed
undeliverable. Their codes are revoked and each letter says why; one that bore an old address
is queued again for the new one, unless it has become moot meanwhile (letters/claim.py).

Two places call this, so that such a code never works whichever commits first: the writers
that change an address or flag it (`member update`, `members import`, `letters returned`),
in their own transaction, for the letters already printed; and the batch's commit for the
letters it holds, which a change committed while they were printed has overtaken
(`claim.lost_since_claim`). The batch's commit holds its members until it ends, so a writer
that waited for it sees the letters it has just printed.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.credentials.codes import live_at, revoke_printed
from cpms_admin.letters.claim import chunks, moot_reasons
from cpms_admin.members.postal import delivery_lines, same_lines
from cpms_admin.models import Letter, Member, SecurityCode, pk
from cpms_admin.pepper import Peppers
from cpms_admin.vocabulary import AuditAction, CancelReason, LetterStatus, RevokeReason

# What a printed letter says of itself (its status_reason; privacy/dossier_pdf.py words them).
LOST_WHILE_PRINTING = "{} while it was printed: its code does not work; pull it from the print run"
SUPERSEDED_WHILE_PRINTING = "its code was superseded by a newer one given while it was printed"
SUPERSEDED_PULL = f"{SUPERSEDED_WHILE_PRINTING}; pull it from the print run"  # the batch's words
MOVED_SINCE_PRINTED = "the member's address changed since it was printed: its code does not work"
FLAGGED_SINCE_PRINTED = (
    "the address was found undeliverable since it was printed: its code does not work"
)
# What a letter that bore an address the member has left says of itself (`bore_other_address`).
_BORE_OLD_ADDRESS = (
    LOST_WHILE_PRINTING.format(CancelReason.address_changed.text),
    MOVED_SINCE_PRINTED,
)


def bore_other_address(letter: Letter, member: Member, peppers: Peppers) -> bool:
    """Whether `letter` bore an address other than the member's current one: coming back, it
    says nothing of the address the member has now. Its digest matching the member's lines
    says it bore this one (even if the member moved and came back since). Otherwise the dates
    judge: voided for bearing an old address, or printed before the address last changed. A
    digest that does not match is not proof of a move: the lines of an unchanged address can
    print otherwise (a renamed commune in the postcode base, the norm's typography)."""
    digest = letter.address_digest
    if digest is not None and same_lines(digest, delivery_lines(member), peppers):
        return False
    return letter.status_reason in _BORE_OLD_ADDRESS or (
        member.address_changed_at is not None
        and letter.printed_at is not None
        and member.address_changed_at > letter.printed_at
    )


def void_printed(
    session: Session, member_ids: Sequence[int], *, moved: bool, agent: str, now: datetime
) -> dict[int, int | None]:
    """Void the printed letters of `member_ids` whose code is live, in the caller's
    transaction: the members' addresses have changed (`moved`) or were found undeliverable.
    Letter id -> the letter queued again in its place (None when it is not: undeliverable,
    or moot). Audited per letter (`letter.void`, on its member)."""
    letters = on_their_way(session, member_ids, now=now)
    if not letters:
        return {}
    letter_ids = [pk(letter) for letter in letters]
    why = MOVED_SINCE_PRINTED if moved else FLAGGED_SINCE_PRINTED
    reason = RevokeReason.address_changed if moved else RevokeReason.address_flagged
    for ids in chunks(letter_ids):
        revoke_printed(session, ids, reason=reason)
        session.exec(update(Letter).where(col(Letter.id).in_(ids)).values(status_reason=why))
    again = queue_again(session, letter_ids, now=now) if moved else {}
    for letter in letters:
        record_void(session, letter, why=why, again=again, agent=agent, now=now)
    return {letter_id: again.get(letter_id) for letter_id in letter_ids}


def on_their_way(session: Session, member_ids: Sequence[int], *, now: datetime) -> list[Letter]:
    """The printed letters of `member_ids` whose code still works: those `void_printed`
    voids."""
    return [
        letter
        for ids in chunks(member_ids)
        for letter in session.exec(
            select(Letter)
            .join(SecurityCode, col(SecurityCode.letter_id) == Letter.id)
            .where(
                col(Letter.member_id).in_(ids),
                col(Letter.status) == LetterStatus.printed,
                live_at(now),  # an expired code works nowhere
            )
            .order_by(col(Letter.id))
        )
    ]


def would_void(session: Session, member_ids: Sequence[int], *, now: datetime) -> tuple[int, int]:
    """What `void_printed(moved=True)` would do for members moving away, for a dry run: how
    many letters it would void, and how many of those it would queue again."""
    letter_ids = [pk(letter) for letter in on_their_way(session, member_ids, now=now)]
    moot = moot_reasons(session, letter_ids, now=now) if letter_ids else {}
    return len(letter_ids), sum(1 for letter_id in letter_ids if letter_id not in moot)


def record_void(
    session: Session, letter: Letter, *, why: str, again: dict[int, int], agent: str, now: datetime
) -> None:
    """The `letter.void` event of a voided letter, on its member: `again` maps it to the
    letter queued in its place, if any."""
    audit.record(
        session,
        agent=agent,
        action=AuditAction.letter_void,
        member=session.get(Member, letter.member_id),
        reason=why,
        at=now,
        letter_id=letter.id,
        queued_again=again.get(pk(letter)),
    )


def queue_again(session: Session, letter_ids: Sequence[int], *, now: datetime) -> dict[int, int]:
    """A new pending letter in place of each of `letter_ids` (voided: they bore an address the
    member left) that is not moot by now: a newer letter or code, a PIN set meanwhile, the
    member closed. The new one is what the old one was (kind, purpose, asker, wording, the
    moment it was asked for), so that the next batch's rules judge it as they would have
    judged the old one. Old letter id -> new letter id."""
    moot = moot_reasons(session, letter_ids, now=now)
    again: dict[int, Letter] = {}
    for letter_id in letter_ids:
        old = session.get(Letter, letter_id)
        if old is None or letter_id in moot:
            continue
        again[letter_id] = Letter(
            member_id=old.member_id,
            kind=old.kind,
            purpose=old.purpose,
            requested_by=old.requested_by,
            wording=old.wording,
            created_at=old.created_at,
        )
        session.add(again[letter_id])
    session.flush()
    return {letter_id: pk(letter) for letter_id, letter in again.items()}
