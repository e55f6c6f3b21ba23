"""Putting letters in the print queue. Rendering them is the nightly batch's job."""

from sqlmodel import Session, col, select

from cpms_admin.credentials.codes import purpose_for
from cpms_admin.models import Account, Letter, Member, pk
from cpms_admin.vocabulary import LetterKind, LetterStatus


def queue_letter(
    session: Session, *, member: Member, kind: str, requested_by: str | None = None
) -> Letter:
    """Queue a letter in the caller's transaction; its code is made when it is printed.
    `requested_by`: the agent who asked for it, `audit.PORTAL`, or None for a rule's letter."""
    account = session.get(Account, pk(member))
    assert account is not None, "every member has an account row"
    purpose = LetterKind(kind).fixed_purpose() or purpose_for(account)
    letter = Letter(member_id=pk(member), kind=kind, purpose=purpose, requested_by=requested_by)
    session.add(letter)
    session.flush()
    return letter


def letters_of(
    session: Session,
    *,
    member_id: int,
    status: LetterStatus = LetterStatus.pending,
) -> list[Letter]:
    """The member's letters in `status`, oldest first."""
    query = select(Letter).where(Letter.member_id == member_id, Letter.status == status)
    return list(session.exec(query.order_by(col(Letter.id))))
