""" "A code is already on its way": the one test the portal and `mail send` make before
sending a new code, which would revoke the one the member is waiting for. (`code campaign`
asks the same question of many members at once, in SQL: `campaign._query`.)"""

from datetime import datetime

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from cpms_admin.audit import PORTAL
from cpms_admin.models import Letter, SecurityCode
from cpms_admin.vocabulary import Channel, CodeStatus, LetterStatus

LETTER_ON_ITS_WAY = "a letter is already on its way"
CODE_ON_ITS_WAY = "a code is already on its way"


def on_its_way(
    session: Session,
    *,
    member_id: int,
    now: datetime,
    asked_by_member: bool = False,
    except_code_id: int | None = None,
) -> str | None:
    """Why a new code would hurt the member, or None: a letter waiting or being printed, or a
    live code (`except_code_id`: one the caller knows may never have reached the member).

    `asked_by_member`: the member asks for a new code. What can be replaced then is an e-mail
    code (they ask because it did not come) and a letter queued by a rule or by their own
    request (the new code supersedes it); what cannot is a letter in the post, one being
    printed, or one an agent sent (it is printed whatever comes after: `batch_claim`)."""
    letters = select(Letter.id).where(
        col(Letter.member_id) == member_id,
        col(Letter.status).in_((LetterStatus.pending, LetterStatus.claimed)),
    )
    if asked_by_member:
        letters = letters.where(
            or_(
                col(Letter.status) == LetterStatus.claimed,
                and_(col(Letter.requested_by).is_not(None), col(Letter.requested_by) != PORTAL),
            )
        )
    if session.exec(letters).first() is not None:
        return LETTER_ON_ITS_WAY
    live = select(SecurityCode.id).where(
        col(SecurityCode.member_id) == member_id,
        col(SecurityCode.status) == CodeStatus.pending,
        col(SecurityCode.expires_at) > now,
    )
    if asked_by_member:
        live = live.where(col(SecurityCode.channel) == Channel.post)
    if except_code_id is not None:
        live = live.where(col(SecurityCode.id) != except_code_id)
    return None if session.exec(live).first() is None else CODE_ON_ITS_WAY
