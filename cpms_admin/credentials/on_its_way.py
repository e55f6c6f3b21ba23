""" "A code is already on its way": the one test made before sending a new code, which
would revoke the one the member is waiting for. The portal and `mail send` ask it of one
member (`on_its_way`); `code campaign` asks it of many at once, in SQL, with the same
predicates correlated to its member rows."""

from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlmodel import Session, col

from cpms_admin.audit import PORTAL
from cpms_admin.credentials.codes import live_at
from cpms_admin.db import unindexed
from cpms_admin.models import Letter, OutgoingMail, SecurityCode
from cpms_admin.vocabulary import Channel, LetterStatus, MailStatus

LETTER_ON_ITS_WAY = "a letter is already on its way"
CODE_ON_ITS_WAY = "a code is already on its way"

MemberId = int | ColumnElement[int]


def letter_on_its_way(member_id: MemberId, *, asked_by_member: bool = False) -> ColumnElement[bool]:
    """A letter waiting for the batch or being printed.

    `asked_by_member`: the member asks for a new code. What can be replaced then is a letter
    queued by a rule or by their own request (the new code supersedes it); what cannot is
    one being printed, or one an agent sent (it is printed whatever comes after: `claim`)."""
    letters = exists().where(
        col(Letter.member_id) == member_id,
        unindexed(Letter.status).in_((LetterStatus.pending, LetterStatus.claimed)),
    )
    if asked_by_member:
        letters = letters.where(
            or_(
                col(Letter.status) == LetterStatus.claimed,
                and_(col(Letter.requested_by).is_not(None), col(Letter.requested_by) != PORTAL),
            )
        )
    return letters


def code_on_its_way(
    member_id: MemberId,
    *,
    now: datetime,
    asked_by_member: bool = False,
    except_code_id: int | None = None,
) -> ColumnElement[bool]:
    """A live code (say in a letter in the post). `asked_by_member`: only a postal one (an
    e-mail code is what they ask again for when it did not come). `except_code_id`: one the
    caller knows may never have reached the member."""
    live = exists().where(col(SecurityCode.member_id) == member_id, live_at(now, per_member=True))
    if asked_by_member:
        live = live.where(col(SecurityCode.channel) == Channel.post)
    if except_code_id is not None:
        live = live.where(col(SecurityCode.id) != except_code_id)
    return live


def mail_on_its_way(member_id: MemberId) -> ColumnElement[bool]:
    """A campaign e-mail waiting for `mail send` (its code is made when it leaves)."""
    return exists().where(
        col(OutgoingMail.member_id) == member_id,
        unindexed(OutgoingMail.status) == MailStatus.pending,
    )


def on_its_way(
    session: Session,
    *,
    member_id: int,
    now: datetime,
    asked_by_member: bool = False,
    except_code_id: int | None = None,
) -> str | None:
    """Why a new code for this member would hurt them, or None (see the predicates)."""
    letter = letter_on_its_way(member_id, asked_by_member=asked_by_member)
    code = code_on_its_way(
        member_id, now=now, asked_by_member=asked_by_member, except_code_id=except_code_id
    )
    letter_found, code_found = session.execute(select(letter, code)).one()
    if letter_found:
        return LETTER_ON_ITS_WAY
    return CODE_ON_ITS_WAY if code_found else None
