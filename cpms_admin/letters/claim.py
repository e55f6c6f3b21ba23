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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cpms_admin import audit
from cpms_admin.audit import PORTAL
from cpms_admin.clock import iso
from cpms_admin.credentials.codes import still_counts
from cpms_admin.db import transaction, unindexed
from cpms_admin.french import agent_time
from cpms_admin.letters.guard import RunGuard
from cpms_admin.letters.queue import LIVE_LETTER
from cpms_admin.members.postal import delivery_lines, same_destination
from cpms_admin.models import Account, Letter, LetterBatch, Member, SecurityCode, pk
from cpms_admin.vocabulary import (
    AuditAction,
    BatchStatus,
    CancelReason,
    LetterKind,
    LetterStatus,
    MemberStatus,
)

# A cancelled letter's status_reason (privacy/dossier_pdf.py words them).
SUPERSEDED_BY = "superseded by letter #{}"
NEWER_CODE_SINCE = f"{CancelReason.newer_code.text} ({{}})"  # when the newer code was made
IN_CHUNK = 500  # ids per IN (...) list: well under every engine's parameter limit


@dataclass(frozen=True)
class Queued:
    id: int
    member_id: int
    kind: str


@dataclass(frozen=True)
class Moot:
    key: CancelReason
    detail: str  # the letter's status_reason


@dataclass
class Claim:
    batch_id: int | None
    claimed: int
    cancelled: Counter[str] = field(default_factory=Counter)


def _id(value: int | None) -> int:
    assert value is not None, "rows read back always have an id"
    return value


def chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    """`ids` in lists short enough for one IN (...)."""
    return [ids[start : start + IN_CHUNK] for start in range(0, len(ids), IN_CHUNK)]


def moot_reasons(session: Session, letter_ids: Sequence[int], *, now: datetime) -> dict[int, Moot]:
    """Letter id -> why it must not be printed, for the moot ones among `letter_ids`."""
    found: dict[int, Moot] = {}
    for ids in chunks(letter_ids):
        found.update(moot_among(session, col(Letter.id).in_(ids), now=now))
    return found


@dataclass(frozen=True)
class PendingLetter:
    """A letter waiting for the next print run, and why that run will cancel it (as `letters
    list` will then say); `moot` None: it will be printed."""

    letter: Letter
    moot: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.letter.id,
            "kind": self.letter.kind,
            "created_at": iso(self.letter.created_at),
            "moot": self.moot,
        }


def as_waiting(
    session: Session, letters: Sequence[Letter], *, now: datetime
) -> list[PendingLetter]:
    """Pending `letters`, each with why the next print run will cancel it, if it will."""
    moot = moot_reasons(session, [pk(letter) for letter in letters], now=now)
    return [
        PendingLetter(letter, moot[pk(letter)].detail if pk(letter) in moot else None)
        for letter in letters
    ]


def moot_among(session: Session, which: ColumnElement[bool], *, now: datetime) -> dict[int, Moot]:
    """Letter id -> why it must not be printed, for the moot ones among the letters `which`
    selects (a batch's, a list of ids): three statements, whatever their number; each
    returns only the moot ones. A later reason wins over an earlier one."""
    return {
        **_newer_code(session, which, now=now),
        **_superseded(session, which),
        **_unfit(session, which),
    }


def _newer_code(session: Session, which: ColumnElement[bool], *, now: datetime) -> dict[int, Moot]:
    """The letters no agent asked for by name whose member got a code that still counts since
    they were queued (the letter's own code aside)."""
    codes = session.exec(
        select(Letter.id, func.max(SecurityCode.created_at))
        .join(
            SecurityCode,
            and_(
                col(SecurityCode.member_id) == Letter.member_id,
                col(SecurityCode.created_at) > Letter.created_at,
                or_(  # the letter's own code, printed in it, is no newer code
                    col(SecurityCode.letter_id).is_(None), col(SecurityCode.letter_id) != Letter.id
                ),
                still_counts(now),
            ),
        )
        .where(which, queued_by_rule_or_portal())
        .group_by(col(Letter.id))
    ).all()
    reason = CancelReason.newer_code
    return {
        _id(letter_id): Moot(reason, NEWER_CODE_SINCE.format(agent_time(made)))
        for letter_id, made in codes
    }


def _superseded(session: Session, which: ColumnElement[bool]) -> dict[int, Moot]:
    """The letters whose member has a newer live letter."""
    newer = aliased(Letter)
    newest = session.exec(
        select(Letter.id, func.max(newer.id))
        .join(
            newer,
            and_(
                col(newer.member_id) == Letter.member_id,
                col(newer.id) > Letter.id,
                unindexed(newer.status).in_(LIVE_LETTER),  # by member, not by status
            ),
        )
        .where(which)
        .group_by(col(Letter.id))
    ).all()
    return {
        _id(letter_id): Moot(CancelReason.superseded, SUPERSEDED_BY.format(newer_id))
        for letter_id, newer_id in newest
    }


def _unfit(session: Session, which: ColumnElement[bool]) -> dict[int, Moot]:
    """The letters whose member is closed or flagged undeliverable, and the welcome letters of
    members who have a PIN already."""
    states = session.execute(
        core_select(
            col(Letter.id),
            col(Letter.kind),
            col(Member.status),
            col(Member.undeliverable_at),
            col(Account.pin_hash),
        )
        .join(Member, col(Member.id) == Letter.member_id)
        .join(Account, col(Account.member_id) == Letter.member_id)
        .where(
            which,
            or_(
                col(Member.status) == MemberStatus.closed,
                col(Member.undeliverable_at).is_not(None),
                and_(col(Letter.kind) == LetterKind.welcome, col(Account.pin_hash).is_not(None)),
            ),
        )
    ).all()
    found: dict[int, Moot] = {}
    for letter_id, kind, status, undeliverable_at, pin_hash in states:
        if kind == LetterKind.welcome and pin_hash is not None:
            found[_id(letter_id)] = Moot(CancelReason.has_pin, CancelReason.has_pin.text)
        if (key := _unreachable(status, undeliverable_at)) is not None:
            found[_id(letter_id)] = Moot(key, key.text)
    return found


def _unreachable(status: str, undeliverable_at: datetime | None) -> CancelReason | None:
    """Why no letter may go to the member now, if none may (closed before flagged)."""
    if status == MemberStatus.closed:
        return CancelReason.member_closed
    return None if undeliverable_at is None else CancelReason.undeliverable


def lost_since_claim(
    session: Session, *, batch_id: int, printed_to: Mapping[int, tuple[str, ...]]
) -> dict[int, CancelReason]:
    """Letter id -> why it no longer goes, for the letters the running batch `batch_id` holds whose
    member was closed, whose address was flagged undeliverable, or whose address is no longer
    where the letter printed goes (`printed_to`: the lines below the name; `same_destination`)
    since the claim: they are in the
    batch's files by now, so their codes must not work. Run first in the batch's commit: the
    batch's members stay as read until it commits (PostgreSQL: FOR SHARE, which a writer
    waits for, then voids what was just printed: letters/voiding.py; SQLite: the write
    lock)."""
    rows = session.exec(
        select(col(Letter.id), Member)
        .join(Member, col(Member.id) == Letter.member_id)
        .where(col(Letter.batch_id) == batch_id, col(Letter.status) == LetterStatus.claimed)
        .with_for_update(read=True, of=Member)
    ).all()
    lost: dict[int, CancelReason] = {}
    for letter_id, member in rows:
        if letter_id is None or letter_id not in printed_to:  # failed: in no file
            continue
        if (key := _unreachable(member.status, member.undeliverable_at)) is not None:
            lost[letter_id] = key
        elif not same_destination(delivery_lines(member), printed_to[letter_id]):
            lost[letter_id] = CancelReason.address_changed
    return lost


def queued_by_rule_or_portal() -> ColumnElement[bool]:
    """A letter no agent asked for by name: an enrolment or campaign letter (None), or the
    member's own request. What an agent sent by post is printed whatever came since."""
    return or_(col(Letter.requested_by).is_(None), col(Letter.requested_by) == PORTAL)


def _next_pending(*, limit: int | None, lock: bool) -> SelectOfScalar[int | None]:
    """The ids of the next pending letters, oldest first. `lock` (PostgreSQL): skip the rows
    another worker is claiming and lock ours; SQLite has one writer at a time anyway."""
    # A member whose other letter another run is printing waits for the next run: two
    # letters printed at once would each store a code, and only the last one would work.
    in_print = aliased(Letter)
    printing = (
        select(in_print.id)
        .where(in_print.member_id == Letter.member_id, in_print.status == LetterStatus.claimed)
        .exists()
    )
    query = (
        select(col(Letter.id))
        .where(Letter.status == LetterStatus.pending, ~printing)
        .order_by(col(Letter.id))
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if lock else query


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
    """One transaction: claim the next pending letters (oldest first, at most `limit`) for a
    new running batch in one UPDATE, then cancel the moot ones among them. Letters another
    run is claiming at the same moment are skipped, never taken twice. No batch is left
    when nothing is to be printed."""
    with transaction(session):
        batch = LetterBatch(
            status=BatchStatus.running, owner=owner, out_dir=out_dir, started_at=now
        )
        session.add(batch)
        session.flush()
        guard.hold(pk(batch))  # before the row is visible: no one may take it for dead
        lock = session.get_bind().dialect.name != "sqlite"
        taken = session.exec(
            update(Letter)
            .where(col(Letter.id).in_(_next_pending(limit=limit, lock=lock)))
            # A reason kept from an earlier batch (its files lost: released) holds no more.
            .values(status=LetterStatus.claimed, batch_id=pk(batch), status_reason=None)
            .returning(col(Letter.id), col(Letter.member_id), col(Letter.kind))
        ).all()
        queued = sorted((Queued(*row) for row in taken), key=lambda letter: letter.id)
        moot = moot_among(session, col(Letter.batch_id) == pk(batch), now=now) if queued else {}
        cancelled = [letter for letter in queued if letter.id in moot]
        _cancel(session, letters=cancelled, moot=moot, agent=agent, now=now)
        claim = Claim(batch_id=pk(batch), claimed=len(queued) - len(cancelled))
        claim.cancelled.update(moot[letter.id].key for letter in cancelled)
        if not claim.claimed:
            session.delete(batch)
            claim.batch_id = None
    return claim


def _cancel(
    session: Session, *, letters: list[Queued], moot: dict[int, Moot], agent: str, now: datetime
) -> None:
    """Cancel the moot `letters` (out of the batch), each with its reason and audit event: one
    UPDATE for all (an executemany), their members read a chunk at a time."""
    if not letters:
        return
    session.execute(
        update(Letter),
        [
            {
                "id": letter.id,
                "status": LetterStatus.cancelled,
                "status_reason": moot[letter.id].detail,
                "batch_id": None,
            }
            for letter in letters
        ],
    )
    members: dict[int, Member] = {}
    for ids in chunks(sorted({letter.member_id for letter in letters})):
        found = session.exec(select(Member).where(col(Member.id).in_(ids)))
        members.update((pk(member), member) for member in found)
    for letter in letters:
        audit.record(
            session,
            agent=agent,
            action=AuditAction.letter_cancel,
            member=members[letter.member_id],
            reason=moot[letter.id].detail,
            at=now,
            letter_id=letter.id,
            kind=letter.kind,
        )


@dataclass(frozen=True)
class DryRun:
    """What a run would do now: `letters batch --dry-run`."""

    pending: int
    cancelled_by_reason: dict[str, int]  # by CancelReason
    would_print: int

    @property
    def would_cancel(self) -> int:
        return sum(self.cancelled_by_reason.values())

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": True,
            "pending": self.pending,
            "would_cancel": self.would_cancel,
            "cancelled_by_reason": self.cancelled_by_reason,
            "would_print": self.would_print,
        }


def dry_run_counts(session: Session, *, limit: int | None, now: datetime) -> DryRun:
    """What a run would do now, changing nothing: pending, would cancel (and why), would print."""
    total = session.exec(
        select(func.count()).select_from(Letter).where(Letter.status == LetterStatus.pending)
    ).one()
    queued = _next_pending(limit=limit, lock=False).subquery()
    taken = session.exec(select(func.count()).select_from(queued)).one()
    moot = moot_among(session, col(Letter.id).in_(select(queued.c.id)), now=now)
    session.rollback()
    return DryRun(total, dict(Counter(m.key for m in moot.values())), taken - len(moot))
