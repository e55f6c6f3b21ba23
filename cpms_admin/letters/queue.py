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


def queue_again(session: Session, letter_ids: list[int]) -> list[int]:
    """A new pending letter for each of `letter_ids`, as it was asked for (kind, purpose,
    asker, wording), in the caller's transaction: their ids, in the same order."""
    again = []
    for letter_id in letter_ids:
        old = session.get(Letter, letter_id)
        assert old is not None, "the letter being queued again exists"
        letter = Letter(
            member_id=old.member_id,
            kind=old.kind,
            purpose=old.purpose,
            requested_by=old.requested_by,
            wording=old.wording,
        )
        session.add(letter)
        again.append(letter)
    session.flush()
    return [pk(letter) for letter in again]


def pending_letters(session: Session, member: Member) -> list[Letter]:
    query = select(Letter).where(
        Letter.member_id == member.id, Letter.status == LetterStatus.pending
    )
    return list(session.exec(query.order_by(col(Letter.id))))
