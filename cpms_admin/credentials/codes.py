"""One-time security codes in the database: store, check, consume, revoke.

Only the keyed hash is stored; the clear code exists in the e-mail or the letter it was
made for, nowhere else. None of these functions commits: they run inside the caller's
transaction, so a code and the audit row (or letter) that goes with it land together.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cpms_admin.audit import PORTAL
from cpms_admin.credentials.code_hash import generate_code, hash_code, verify_code
from cpms_admin.db import unindexed
from cpms_admin.french import PARIS, paris_time
from cpms_admin.models import Letter, SecurityCode, pk
from cpms_admin.pepper import Peppers, as_peppers, tagged
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    Asker,
    Channel,
    CodeStatus,
    PortalReason,
    Purpose,
    RevokeReason,
)

# Compared against when there is no live code, so a check costs the same either way.
_DUMMY_HASH = "0000000000000000$" + "0" * 64  # tagged with the current pepper's id


@dataclass(frozen=True)
class IssuedCode:
    """A code just stored, with its clear value for the one message that carries it."""

    row: SecurityCode
    clear: str = field(repr=False)


@dataclass(frozen=True)
class CodeCheck:
    """`ok` (the live code, not consumed yet), `wrong_code` (a try was spent), `code_used`
    (the code the member already used, typed again: no try spent) or `dead_code` (no live
    code: none issued, expired, used, revoked, or killed by this try)."""

    outcome: PortalReason
    code: SecurityCode | None = None
    tries_left: int | None = None


class PinHistory(Protocol):
    """What `purpose_for` reads: an `Account`, or a row carrying its columns."""

    @property
    def pin_hash(self) -> str | None: ...
    @property
    def pin_set_at(self) -> datetime | None: ...
    @property
    def last_login_at(self) -> datetime | None: ...


def purpose_for(account: PinHistory) -> str:
    """A first-login code for a member who never got in, else a reset code (also after an
    agent's reset, so the e-mail does not greet a long-standing member as a newcomer)."""
    had_pin = account.pin_hash or account.pin_set_at or account.last_login_at
    return Purpose.pin_reset if had_pin else Purpose.first_login


def code_expiry(channel: str, made_at: datetime, settings: Settings) -> datetime:
    """When a code made at `made_at` stops working (UTC). E-mail codes live minutes; postal
    ones must survive the post, and work to the end of the day their letter gives."""
    if channel == Channel.email:
        return made_at + timedelta(minutes=settings.code_email_ttl_minutes)
    if channel == Channel.post:
        day_after = postal_last_day(made_at, settings) + timedelta(days=1)
        return datetime.combine(day_after, time(), tzinfo=PARIS).astimezone(UTC)
    raise ValueError(f"unknown code channel {channel!r}")


def postal_last_day(made_at: datetime, settings: Settings) -> date:
    """The last day (Paris) a postal code made at `made_at` works: "valable jusqu'au"."""
    return (paris_time(made_at) + timedelta(days=settings.code_post_ttl_days)).date()


def revoke_pending(
    session: Session,
    *,
    member_id: int,
    reason: RevokeReason,
    made_by: datetime | None = None,
    older_than: int | None = None,
) -> list[int]:
    """Revoke every pending code of the member made by `made_by`, if given, for `reason`; the
    ids revoked. `older_than` (a code made at `made_by`) keeps that code and those made after
    it, at the same moment too (ids in order): two codes made at one moment, each sent, must
    not revoke each other, leaving the member none."""
    statement = (
        update(SecurityCode)
        .where(
            col(SecurityCode.member_id) == member_id, col(SecurityCode.status) == CodeStatus.pending
        )
        .values(status=CodeStatus.revoked, revoked_reason=reason)
        .returning(col(SecurityCode.id))
    )
    if made_by is not None and older_than is not None:
        created = col(SecurityCode.created_at)
        statement = statement.where(
            or_(created < made_by, and_(created == made_by, col(SecurityCode.id) < older_than))
        )
    elif made_by is not None:
        statement = statement.where(col(SecurityCode.created_at) <= made_by)
    return list(session.exec(statement).scalars())


def live_at(now: datetime, *, per_member: bool = False) -> ColumnElement[bool]:
    """A code that still works at `now`: pending and unexpired. `per_member`: asked of given
    members, whose codes are found through the member_id index rather than the status index
    (`db.unindexed`)."""
    status = unindexed(SecurityCode.status) if per_member else col(SecurityCode.status)
    return and_(status == CodeStatus.pending, col(SecurityCode.expires_at) > now)


def is_live(code: SecurityCode, now: datetime) -> bool:
    """`live_at`, of a code already read."""
    return code.status == CodeStatus.pending and code.expires_at > now


def still_counts(now: datetime) -> ColumnElement[bool]:
    """A code that supersedes those made before it: used, or live at `now`. Always asked of
    given members: their codes are found through the member_id index, never through the
    status index (`db.unindexed`), which would read every used code."""
    return or_(unindexed(SecurityCode.status) == CodeStatus.used, live_at(now, per_member=True))


def _emailed_pending(member_ids: Sequence[int]) -> ColumnElement[bool]:
    return and_(
        col(SecurityCode.member_id).in_(member_ids),
        col(SecurityCode.channel) == Channel.email,
        col(SecurityCode.status) == CodeStatus.pending,
    )


def revoke_emailed(session: Session, member_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Revoke the members' pending codes sent by e-mail: their address changed, and a code
    that went to the old one (a wrong address, the agent's correction) must not work. The
    (member id, code id) of each code revoked."""
    if not member_ids:
        return []
    statement = (
        update(SecurityCode)
        .where(_emailed_pending(member_ids))
        .values(status=CodeStatus.revoked, revoked_reason=RevokeReason.email_changed)
        .returning(col(SecurityCode.member_id), col(SecurityCode.id))
    )
    return [(int(member), int(code)) for member, code in session.exec(statement).all()]


def count_emailed(session: Session, member_ids: Sequence[int]) -> int:
    """How many codes `revoke_emailed` would revoke (a dry run)."""
    if not member_ids:
        return 0
    statement = select(func.count()).select_from(SecurityCode)
    return int(session.exec(statement.where(_emailed_pending(member_ids))).one())


def code_since(
    session: Session, *, member_id: int, since: datetime, now: datetime, but: int | None
) -> bool:
    """Whether the member got a code that still counts (`still_counts`) after `since`, the
    code `but` aside: what makes a queued code e-mail moot, as `letters.claim` finds it for a
    queued letter."""
    statement = select(SecurityCode.id).where(
        col(SecurityCode.member_id) == member_id,
        col(SecurityCode.created_at) > since,
        still_counts(now),
    )
    if but is not None:
        statement = statement.where(col(SecurityCode.id) != but)
    return session.exec(statement.limit(1)).first() is not None


def revoke_printed(
    session: Session, letters: Sequence[int] | SelectOfScalar[Any], *, reason: RevokeReason
) -> int:
    """Revoke the pending codes printed in `letters` (their ids, or a query of them): letters
    that will not reach their member, for `reason`. How many were pending."""
    statement = (
        update(SecurityCode)
        .where(
            col(SecurityCode.letter_id).in_(letters),
            col(SecurityCode.status) == CodeStatus.pending,
        )
        .values(status=CodeStatus.revoked, revoked_reason=reason)
    )
    return int(session.exec(statement).rowcount)


def revoke_code(session: Session, *, code_id: int, reason: RevokeReason) -> bool:
    """Revoke one code if it is still pending, for `reason` (True when it was)."""
    statement = (
        update(SecurityCode)
        .where(col(SecurityCode.id) == code_id, col(SecurityCode.status) == CodeStatus.pending)
        .values(status=CodeStatus.revoked, revoked_reason=reason)
        .returning(col(SecurityCode.id))
    )
    return session.exec(statement).first() is not None


def store_code(
    session: Session,
    *,
    member_id: int,
    purpose: str,
    channel: str,
    code: str,
    pepper: bytes | Peppers,
    now: datetime,
    settings: Settings,
    requested_by: str | None = None,
    letter_id: int | None = None,
    made_at: datetime | None = None,
    supersede: bool = True,
) -> SecurityCode:
    """Store the hash of `code` (made by the caller), valid for the channel's lifetime, and
    (`supersede`) revoke the member's older pending codes. Does not commit: the caller's
    transaction holds the code and whatever carries it.

    An e-mail code is stored with `supersede` off and supersedes the older ones only once
    it was sent (`supersede_older`): a failed e-mail must not take away the code the member
    already holds. Until then the new code is the one checked (`live_code`: the newest).

    `made_at` is for a code made before `now`: the letter batch makes its codes as it renders
    and stores them when it commits. The code then counts from `made_at` (its lifetime, the
    codes it revokes), and if the member was given a code since then and still holds or has
    used it, that newer code wins: this one is stored revoked.
    """
    if purpose not in set(Purpose):
        raise ValueError(f"unknown code purpose {purpose!r}")
    made = made_at or now
    if supersede:
        revoke_pending(
            session, member_id=member_id, made_by=made_at, reason=RevokeReason.superseded
        )
    newer = made_at is not None and _made_since(session, member_id, made_at, now)
    row = SecurityCode(
        member_id=member_id,
        purpose=purpose,
        channel=channel,
        code_hash=hash_code(pepper=pepper, code=code),
        status=CodeStatus.revoked if newer else CodeStatus.pending,
        revoked_reason=RevokeReason.superseded if newer else None,
        created_at=made,
        expires_at=code_expiry(channel, made, settings),
        letter_id=letter_id,
        requested_by=requested_by,
    )
    session.add(row)
    session.flush()
    return row


def status_of(session: Session, *, code_id: int) -> str:
    """The code's status, read in the caller's transaction (begun after the code was stored,
    it sees what was committed since)."""
    return session.exec(select(SecurityCode.status).where(col(SecurityCode.id) == code_id)).one()


def supersede_older(session: Session, *, code: SecurityCode) -> list[int]:
    """Revoke the member's pending codes made before `code` (once `code` reached them)."""
    return revoke_pending(
        session,
        member_id=code.member_id,
        made_by=code.created_at,
        older_than=pk(code),
        reason=RevokeReason.superseded,
    )


def asker(requested_by: str | None) -> Asker:
    """Who asked for a code or letter, from its `requested_by`: the member on the portal
    (PORTAL), an agent by name, or nobody (a campaign's, None)."""
    if requested_by is None:
        return Asker.cpms
    return Asker.member if requested_by == PORTAL else Asker.agent


def opens_hard_lock(session: Session, code: SecurityCode, hard_locked_at: datetime | None) -> bool:
    """Whether `code` may be tried on a hard-locked account: an agent asked for it after the
    lock (the portal asks for none while it holds), so an agent has stepped in. Its own tries
    are the only guesses it allows. A printed code is made by the night's batch: it was asked
    for when its letter was queued (a letter queued again keeps that time), not when made."""
    if hard_locked_at is None:
        return False
    letter = None if code.letter_id is None else session.get(Letter, code.letter_id)
    if letter is not None:
        return letter_opens_hard_lock(letter, hard_locked_at)
    return asker(code.requested_by) == Asker.agent and code.created_at >= hard_locked_at


def letter_opens_hard_lock(letter: Letter, hard_locked_at: datetime) -> bool:
    """Whether the code `letter` carries (or will carry) may be tried on an account
    hard-locked at `hard_locked_at`: an agent queued it since (`opens_hard_lock`)."""
    return asker(letter.requested_by) == Asker.agent and letter.created_at >= hard_locked_at


def _made_since(session: Session, member_id: int, made_at: datetime, now: datetime) -> bool:
    """Whether the member was given a code after `made_at` that still counts at `now`."""
    statement = select(SecurityCode.id).where(
        col(SecurityCode.member_id) == member_id,
        col(SecurityCode.created_at) > made_at,
        still_counts(now),
    )
    return session.exec(statement).first() is not None


def issue_code(
    session: Session,
    *,
    member_id: int,
    purpose: str,
    channel: str,
    pepper: bytes | Peppers,
    now: datetime,
    settings: Settings,
    requested_by: str | None = None,
    supersede: bool = True,
) -> IssuedCode:
    """Generate a code and store it (see `store_code`); the clear value is only returned."""
    clear = generate_code()
    row = store_code(
        session,
        member_id=member_id,
        purpose=purpose,
        channel=channel,
        code=clear,
        pepper=pepper,
        now=now,
        settings=settings,
        requested_by=requested_by,
        supersede=supersede,
    )
    return IssuedCode(row=row, clear=clear)


def _live(member_id: int, now: datetime) -> SelectOfScalar[SecurityCode]:
    """The member's newest pending, unexpired code (newest as made: the letter batch stores
    its codes some time after making them)."""
    return (
        select(SecurityCode)
        .where(col(SecurityCode.member_id) == member_id, live_at(now))
        .order_by(col(SecurityCode.created_at).desc(), col(SecurityCode.id).desc())
    )


def newest_code(session: Session, *, member_id: int) -> SecurityCode | None:
    """The member's newest code, whatever became of it (newest as made, as `_live`)."""
    return session.exec(
        select(SecurityCode)
        .where(col(SecurityCode.member_id) == member_id)
        .order_by(col(SecurityCode.created_at).desc(), col(SecurityCode.id).desc())
    ).first()


def used_code(session: Session, *, member_id: int, now: datetime) -> SecurityCode | None:
    """The code the member used last, while it would still be valid: the one they may type
    again (a second tab, the Back button, the letter read twice)."""
    return session.exec(
        select(SecurityCode)
        .where(
            col(SecurityCode.member_id) == member_id,
            col(SecurityCode.status) == CodeStatus.used,
            col(SecurityCode.expires_at) > now,
        )
        .order_by(col(SecurityCode.used_at).desc(), col(SecurityCode.id).desc())
    ).first()


def matches(code: str, row: SecurityCode | None, pepper: bytes | Peppers) -> bool:
    """Whether `code` is `row`'s, in constant time; as much work when there is no row."""
    stored = row.code_hash if row is not None else _dummy(pepper)
    return verify_code(pepper=pepper, code=code, stored=stored) and row is not None


def _dummy(pepper: bytes | Peppers) -> str:
    return tagged(as_peppers(pepper).current_id, "$", _DUMMY_HASH)


def live_code(
    session: Session, *, member_id: int, now: datetime, lock: bool = False
) -> SecurityCode | None:
    """The member's newest pending, unexpired code; `lock` holds it until the transaction
    ends, so concurrent guesses at it are checked one at a time (see `check_code`)."""
    query = _live(member_id, now)
    return session.exec(query.with_for_update() if lock else query).first()


def check_code(
    session: Session,
    *,
    live: SecurityCode | None,
    code: str,
    pepper: bytes | Peppers,
    settings: Settings,
    used: SecurityCode | None = None,
) -> CodeCheck:
    """Check `code` against `live`, the member's live code as `live_code(lock=True)` read it
    (None: there is none). Locked, it is checked by one guess at a time and never past its
    try limit. A wrong code spends a try (the last one revokes it); a match is not consumed
    here (see `consume_code`), so the caller can still refuse the new PIN without burning it.

    `used` is the code the member used last (`used_code`): typed again, it is `used` and
    spends nothing. Only someone who holds that very code gets that answer. Both compares
    are made whatever the member holds, so a check costs the same for all.
    """
    row = live
    live_matches = matches(code, row, pepper)
    used_matches = matches(code, used, pepper)
    if live_matches and row is not None:
        return CodeCheck(PortalReason.ok, row, settings.code_max_tries - row.failed_tries)
    if used_matches:
        return CodeCheck(PortalReason.code_used, used)
    if row is None:
        return CodeCheck(PortalReason.dead_code)
    tries = session.exec(
        update(SecurityCode)
        .where(col(SecurityCode.id) == pk(row))
        .values(failed_tries=SecurityCode.failed_tries + 1)
        .returning(col(SecurityCode.failed_tries))
    ).scalar_one()
    left = max(settings.code_max_tries - tries, 0)
    if left == 0:
        revoke_code(session, code_id=pk(row), reason=RevokeReason.tries_spent)
    session.refresh(row)
    return CodeCheck(PortalReason.wrong_code, row, left)


def consume_code(session: Session, *, code_id: int, now: datetime) -> bool:
    """Mark the code used if it is still live (True); single use even under concurrency."""
    statement = (
        update(SecurityCode)
        .where(col(SecurityCode.id) == code_id, live_at(now))
        .values(status=CodeStatus.used, used_at=now)
        .returning(col(SecurityCode.id))
    )
    used = session.exec(statement).first() is not None
    if used:  # an older code still pending (say, superseded by a crash) must not outlive it
        code = session.get(SecurityCode, code_id)
        assert code is not None
        supersede_older(session, code=code)
    return used
