"""Closed members' personal data, pseudonymised once their retention period has passed.

The member's row stays, with its id: the audit events about them name that id and must
never change (the audit chain verifies them as written), and their codes, letters and
e-mails keep pointing at it. What made it theirs goes: the names, birth date, e-mail,
address, envelope line, the reasons typed about them, the search columns and the digest of
the address each of their letters bore. The NIR becomes
`X` and the row's id on 14 digits, which no NIR can be (a NIR starts with a digit, and its
key is checked wherever one is typed): the member can never be looked up again, nor stand in
the way of anyone's enrolment. Their PIN hash goes too; e-mails still queued for them are
cancelled, and the errors recorded for their e-mails (which may quote the address) cleared.
A pseudonymised member is left out of `member list` and `members export`.

Members go in batches of BATCH, each in one transaction with one event per member
(`purge.closed_members.member`, naming the category's event): a run killed half-way leaves
each member untouched or fully pseudonymised, and the next run does the rest.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, func, update
from sqlmodel import Session, SQLModel, col, select

from cpms_admin.audit import STARTED, RunAudit
from cpms_admin.db import stated, transaction
from cpms_admin.faults import failpoint
from cpms_admin.members.search import forget_removed_words
from cpms_admin.models import Account, Letter, Member, OutgoingMail
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.vocabulary import LetterStatus, MailStatus, MemberStatus, RetentionCategory

BATCH = 500
PSEUDONYM_PREFIX = "X"
RULE = Rule("closed more than {days} ago", "retention_closed_members_days")
_MEMBER = SQLModel.metadata.tables["member"]
# What is left of a pseudonymised member's personal data (the NIR is set apart, per member).
BLANK = {
    "civility": None,
    "last_name": "",
    "first_name": "",
    "birth_date": None,
    "email": None,
    "address_complement": None,
    "address_building": None,
    "street": "",
    "locality": None,
    "postcode": "",
    "city": "",
    "country": "",
    "envelope_name": None,
    "search_text": "",
    "sort_name": "",
    "closed_reason": None,
    "undeliverable_at": None,
    "undeliverable_reason": None,
    "address_changed_at": None,
}
CANCELLED = "member pseudonymised"


def pseudonym_nir(member_id: int) -> str:
    """What stands in the NIR column of a pseudonymised member: `X00000000000042`."""
    return f"{PSEUDONYM_PREFIX}{member_id:014d}"


def _due(before: datetime) -> tuple[object, ...]:
    return (
        col(Member.status) == stated(MemberStatus.closed),  # the closed members' own index
        col(Member.pseudonymised_at).is_(None),
        col(Member.closed_at) < before,
    )


def survey_closed_members(scope: Scope, before: datetime) -> Found:
    count, oldest = scope.session.exec(
        select(func.count(), func.min(Member.closed_at)).where(*_due(before))  # type: ignore[arg-type]
    ).one()
    return Found(int(count), oldest)


def due_members(session: Session, before: datetime) -> list[int]:
    """The next BATCH members due (closed before `before`, not pseudonymised yet), locked.
    Read through the closed members' own index, in its order: those already pseudonymised
    have left it, so each batch reads only members still to do."""
    ids = session.exec(
        select(Member.id)
        .where(*_due(before))  # type: ignore[arg-type]
        .order_by(col(Member.sort_name), col(Member.id))
        .limit(BATCH)
        .with_for_update()
    ).all()
    return [member_id for member_id in ids if member_id is not None]


def drop_closed_members(scope: Scope, before: datetime, rule: str) -> Found:
    """In batches, as a bulk run: the category's event goes in with the first batch (the
    members' events name it), `started` with the members found, and a closing event says how
    many went; a run stopped half-way leaves no closing event. With nobody to pseudonymise,
    the one event says so."""
    session = scope.session
    found = survey_closed_members(scope, before)
    session.rollback()
    run: RunAudit | None = None
    done = 0
    while True:
        with transaction(session):
            member_ids = due_members(session, before)
            if run is None:
                category = RetentionCategory.closed_members
                outcome = STARTED if member_ids else "ok"
                run = record_category(
                    scope, category, rule=rule, before=before, found=found, outcome=outcome
                )
            if not member_ids:
                break
            pseudonymise(session, member_ids, now=scope.now)
            run.record_members(session, member_ids, change="pseudonymised")
        done += len(member_ids)
        failpoint("purge.between_member_batches")
    if done:
        with transaction(session):
            forget_removed_words(session)
            run.finish(session, counts={"count": done}, outcome="ok")
    return Found(done, found.oldest if done else None)


def pseudonymise(session: Session, member_ids: Sequence[int], *, now: datetime) -> None:
    """Replace the personal data of these members, in the caller's transaction."""
    session.execute(
        update(_MEMBER)
        .where(_MEMBER.c.id == bindparam("member"))
        .values(nir=bindparam("pseudonym"), pseudonymised_at=now, updated_at=now, **BLANK),
        [{"member": member_id, "pseudonym": pseudonym_nir(member_id)} for member_id in member_ids],
    )
    session.execute(
        update(Account).where(col(Account.member_id).in_(member_ids)).values(pin_hash=None)
    )
    session.execute(  # the keyed digest of the address each letter bore
        update(Letter).where(col(Letter.member_id).in_(member_ids)).values(address_digest=None)
    )
    session.execute(  # a return's reason: the print house's free text ("décédé", a new address)
        update(Letter)
        .where(col(Letter.member_id).in_(member_ids), col(Letter.status) == LetterStatus.returned)
        .values(status_reason=None)
    )
    mails = col(OutgoingMail.member_id).in_(member_ids)
    session.execute(update(OutgoingMail).where(mails).values(last_error=None))
    session.execute(
        update(OutgoingMail)
        .where(mails, col(OutgoingMail.status) == MailStatus.pending)
        .values(status=MailStatus.cancelled, last_error=CANCELLED)
    )
