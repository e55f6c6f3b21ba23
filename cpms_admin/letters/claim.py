"""Claiming letters for a batch run, and cancelling the ones that have become moot.

A letter is moot when printing it would not help the member, or would hurt: its code would
be superseded at once, or revoke a code the member is waiting for. Rules, in order:
the member is closed; the member's address is flagged undeliverable (a letter came back); a
welcome letter for a member who already has a PIN; a newer letter for
the same member is waiting, being printed or printed; a code made after the letter was queued
is live or was used, unless an agent asked for this letter (they sent it by post for a
reason, and the member must get it).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.audit import PORTAL
from cpms_admin.clock import iso
from cpms_admin.credentials.codes import still_counts
from cpms_admin.db import transaction
from cpms_admin.errors import Conflict
from cpms_admin.letters.guard import RunGuard
from cpms_admin.models import Account, Letter, LetterBatch, Member, SecurityCode, pk
from cpms_admin.vocabulary import BatchStatus, LetterKind, LetterStatus, MemberStatus

LIVE_LETTER = (LetterStatus.pending, LetterStatus.claimed, LetterStatus.printed)
IN_CHUNK = 500  # ids per IN (...) list: well under every engine's parameter limit
REASONS = {
    "member_closed": "member closed",
    "has_pin": "welcome letter, but the member already has a PIN",
    "superseded": "superseded by a newer letter",
    "newer_code": "a newer code was issued after it was queued",
    "undeliverable": "the address is flagged undeliverable (a letter came back)",
}


@dataclass(frozen=True)
class Queued:
    id: int
    member_id: int
    kind: str
    created_at: datetime

    @classmethod
    def of(cls, letter: Letter) -> "Queued":
        return cls(_id(letter.id), letter.member_id, letter.kind, letter.created_at)


@dataclass(frozen=True)
class Moot:
    key: str  # one of REASONS
    detail: str  # the letter's status_reason


@dataclass
class Claim:
    batch_id: int | None
    claimed: int
    cancelled: Counter[str] = field(default_factory=Counter)


def _id(value: int | None) -> int:
    assert value is not None, "rows read back always have an id"
    return value


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[start : start + IN_CHUNK] for start in range(0, len(ids), IN_CHUNK)]


def moot_reasons(session: Session, letters: Sequence[Queued], *, now: datetime) -> dict[int, Moot]:
    """Letter id -> why it must not be printed, for the moot ones among `letters`."""
    found: dict[int, Moot] = {}
    for ids in _chunks([letter.id for letter in letters]):
        states = session.exec(
            select(Letter.id, Letter.kind, Member, Account.pin_hash)
            .join(Member, col(Member.id) == Letter.member_id)
            .join(Account, col(Account.member_id) == Letter.member_id)
            .where(col(Letter.id).in_(ids))
        ).all()
        newer = aliased(Letter)
        newest = session.exec(
            select(Letter.id, func.max(newer.id))
            .join(
                newer,
                and_(
                    col(newer.member_id) == Letter.member_id,
                    col(newer.id) > Letter.id,
                    col(newer.status).in_(LIVE_LETTER),
                ),
            )
            .where(col(Letter.id).in_(ids))
            .group_by(col(Letter.id))
        ).all()
        codes = session.exec(
            select(Letter.id, func.max(SecurityCode.created_at))
            .join(
                SecurityCode,
                and_(
                    col(SecurityCode.member_id) == Letter.member_id,
                    col(SecurityCode.created_at) > Letter.created_at,
                    still_counts(now),
                ),
            )
            .where(col(Letter.id).in_(ids), queued_by_rule_or_portal())
            .group_by(col(Letter.id))
        ).all()
        for letter_id, made in codes:
            found[_id(letter_id)] = Moot("newer_code", f"{REASONS['newer_code']} ({iso(made)})")
        for letter_id, newer_id in newest:
            found[_id(letter_id)] = Moot("superseded", f"superseded by letter #{newer_id}")
        for letter_id, kind, member, pin_hash in states:
            if kind == LetterKind.welcome and pin_hash is not None:
                found[_id(letter_id)] = Moot("has_pin", REASONS["has_pin"])
            if member.undeliverable_at is not None:
                found[_id(letter_id)] = Moot("undeliverable", REASONS["undeliverable"])
            if member.status == MemberStatus.closed:
                found[_id(letter_id)] = Moot("member_closed", REASONS["member_closed"])
    return found


def queued_by_rule_or_portal() -> ColumnElement[bool]:
    """A letter no agent asked for by name: an enrolment or campaign letter (None), or the
    member's own request. What an agent sent by post is printed whatever came since."""
    return or_(col(Letter.requested_by).is_(None), col(Letter.requested_by) == PORTAL)


def _pending(session: Session, *, limit: int | None, lock: bool) -> list[Queued]:
    # A member whose other letter another run is printing waits for the next run: two
    # letters printed at once would each store a code, and only the last one would work.
    in_print = aliased(Letter)
    printing = (
        select(in_print.id)
        .where(in_print.member_id == Letter.member_id, in_print.status == LetterStatus.claimed)
        .exists()
    )
    query = (
        select(Letter.id, Letter.member_id, Letter.kind, Letter.created_at)
        .where(Letter.status == LetterStatus.pending, ~printing)
        .order_by(col(Letter.id))
        .limit(limit)
    )
    if lock:  # PostgreSQL: skip rows another worker is claiming; no effect on SQLite
        query = query.with_for_update(skip_locked=True)
    return [Queued(*row) for row in session.exec(query).all()]


def claim_letters(
    session: Session,
    *,
    guard: RunGuard,
    owner: str,
    out_dir: str,
    limit: int | None,
    agent: str,
    now: datetime,
) -> Claim:
    """One transaction: cancel the moot letters among the next pending ones (oldest first,
    at most `limit`), claim the rest for a new running batch. Letters another run
    is claiming at the same moment are skipped, never taken twice."""
    with transaction(session):
        queued = _pending(session, limit=limit, lock=session.get_bind().dialect.name != "sqlite")
        moot = moot_reasons(session, queued, now=now)
        claim = Claim(batch_id=None, claimed=0)
        for letter in queued:
            if letter.id in moot:
                _cancel(session, letter=letter, moot=moot[letter.id], agent=agent, now=now)
                claim.cancelled[moot[letter.id].key] += 1
        printable = [letter.id for letter in queued if letter.id not in moot]
        if printable:
            batch = LetterBatch(
                status=BatchStatus.running, owner=owner, out_dir=out_dir, started_at=now
            )
            session.add(batch)
            session.flush()
            guard.hold(pk(batch))  # before the row is visible: no one may take it for dead
            for ids in _chunks(printable):
                taken = session.exec(
                    update(Letter)
                    .where(col(Letter.id).in_(ids), col(Letter.status) == LetterStatus.pending)
                    .values(status=LetterStatus.claimed, batch_id=pk(batch))
                )
                if taken.rowcount != len(ids):  # a safety net, kept under `python -O` too
                    raise Conflict("letters changed while being claimed; nothing was claimed")
            claim.batch_id, claim.claimed = pk(batch), len(printable)
    return claim


def _cancel(session: Session, *, letter: Queued, moot: Moot, agent: str, now: datetime) -> None:
    session.exec(
        update(Letter)
        .where(col(Letter.id) == letter.id)
        .values(status=LetterStatus.cancelled, status_reason=moot.detail)
    )
    audit.record(
        session,
        agent=agent,
        action="letter.cancel",
        member=session.get(Member, letter.member_id),
        reason=moot.detail,
        at=now,
        letter_id=letter.id,
        kind=letter.kind,
    )


def dry_run_counts(session: Session, *, limit: int | None, now: datetime) -> dict[str, object]:
    """What a run would do now, changing nothing: pending, would cancel (and why), would print."""
    total = session.exec(
        select(func.count()).select_from(Letter).where(Letter.status == LetterStatus.pending)
    ).one()
    queued = _pending(session, limit=limit, lock=False)
    moot = moot_reasons(session, queued, now=now)
    session.rollback()
    return {
        "dry_run": True,
        "pending": total,
        "would_cancel": len(moot),
        "cancelled_by_reason": dict(Counter(m.key for m in moot.values())),
        "would_print": len(queued) - len(moot),
    }
