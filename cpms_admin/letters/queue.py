"""Putting letters in the print queue. Rendering them is the nightly batch's job."""

from datetime import datetime

from sqlmodel import Session, col, select

from cpms_admin.credentials.codes import purpose_for
from cpms_admin.models import Account, Letter, Member, pk
from cpms_admin.vocabulary import LetterKind, LetterStatus

# A member's letters that count: one waiting, being printed or printed supersedes the older
# ones of that member at the next batch (letters/claim.py), so only the newest prints.
LIVE_LETTER = (LetterStatus.pending, LetterStatus.claimed, LetterStatus.printed)


def queue_letter(
    session: Session,
    *,
    member: Member,
    kind: str,
    requested_by: str | None = None,
    now: datetime,
) -> Letter:
    """Queue a letter in the caller's transaction; its code is made when it is printed.
    `requested_by`: the agent who asked for it, `audit.PORTAL`, or None for a rule's letter."""
    account = session.get(Account, pk(member))
    assert account is not None, "every member has an account row"
    purpose = LetterKind(kind).fixed_purpose() or purpose_for(account)
    letter = Letter(
        member_id=pk(member), kind=kind, purpose=purpose, requested_by=requested_by, created_at=now
    )
    session.add(letter)
    session.flush()
    return letter


def letter_to_ride(session: Session, *, member_id: int, purpose: str) -> Letter | None:
    """The letter a new code for `purpose` can ride on: the member's newest live letter, if
    it is still waiting and for that purpose; None when a new letter must be queued."""
    newest = session.exec(
        select(Letter)
        .where(Letter.member_id == member_id, col(Letter.status).in_(LIVE_LETTER))
        .order_by(col(Letter.id).desc())
        .limit(1)
    ).first()
    if newest is None or newest.status != LetterStatus.pending or newest.purpose != purpose:
        return None
    return newest


def letters_of(
    session: Session,
    *,
    member_id: int,
    status: LetterStatus = LetterStatus.pending,
) -> list[Letter]:
    """The member's letters in `status`, oldest first."""
    query = select(Letter).where(Letter.member_id == member_id, Letter.status == status)
    return list(session.exec(query.order_by(col(Letter.id))))
