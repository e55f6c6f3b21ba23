"""PIN attempts: the gate before verification, and atomic counting after it.

Verification (argon2, tens of milliseconds) runs outside any transaction. The write that
follows repeats the gate in its WHERE clause (`UPDATE ... SET failed_attempts =
failed_attempts + 1 WHERE <not locked> RETURNING failed_attempts`), so concurrent attempts
are serialised by the row lock (PostgreSQL) or the write lock (SQLite): none is lost, and
none is counted or let in once another one has locked the account.

An unknown NIR goes through the same rules (see `unknown_nir`), so the portal's answers
look the same as for a member.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import not_, or_, update
from sqlmodel import Session, col, select

from cpms_admin.lockout import Block, Counters, after_failures, blocked
from cpms_admin.models import Account, Member, pk
from cpms_admin.nir import parse_nir
from cpms_admin.security.pins import PinHasher, check_pin_format
from cpms_admin.services import audit, unknown_nir
from cpms_admin.settings import Settings

PORTAL = unknown_nir.PORTAL


@functools.lru_cache(maxsize=8)
def pin_hasher(settings: Settings) -> PinHasher:
    """The hasher for these settings, warmed up: its first check of a missing hash makes a
    dummy hash, which would otherwise make the first unknown-NIR attempt the slowest."""
    hasher = PinHasher.from_settings(settings)
    hasher.verify(None, "000000")
    return hasher


@dataclass(frozen=True)
class Subject:
    """What an attempt needs to know about the member, read before the slow verification."""

    member: Member
    pin_hash: str | None
    counters: Counters

    @property
    def member_id(self) -> int:
        return pk(self.member)


@dataclass(frozen=True)
class Attempt:
    """What a PIN attempt came to. `reason` is internal (ok, wrong_pin, no_pin, closed,
    unknown_member, or a block); `counted` says a failure was recorded."""

    ok: bool
    reason: str
    counters: Counters
    counted: bool = False
    block: Block | None = None
    subject: Subject | None = None


def read_subject(session: Session, nir: str) -> Subject | None:
    """The member and a fresh copy of their account (None for an unknown NIR)."""
    member = session.exec(select(Member).where(Member.nir == nir)).first()
    if member is None:
        return None
    account = session.get(Account, pk(member), populate_existing=True)
    assert account is not None, "every member has an account row"
    return Subject(member, account.pin_hash, Counters.of(account))


def check_pin(
    session: Session,
    *,
    nir: str,
    pin: str,
    action: str,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    """Check a PIN. A failure or a block is recorded and committed here; a success is
    returned unwritten, for the caller to finish with `settle_success`."""
    compact = parse_nir(nir)
    check_pin_format(pin)
    hasher = pin_hasher(settings)
    subject = read_subject(session, compact)
    session.commit()  # nothing written: just do not hold a lock during argon2
    if subject is None:
        counters, block = unknown_nir.attempt(
            session,
            nir=compact,
            pin=pin,
            action=action,
            captcha_ok=captcha_ok,
            hasher=hasher,
            settings=settings,
            now=now,
        )
        return Attempt(False, "unknown_member", counters, counted=block is None, block=block)
    block = blocked(subject.counters, now=now, captcha_ok=captcha_ok)
    if block is not None:
        return _refuse(session, subject=subject, block=block, action=action, now=now)
    closed = subject.member.status == "closed"
    if hasher.verify(subject.pin_hash, pin):
        if not closed:
            return Attempt(True, "ok", subject.counters, subject=subject)
        audit.record(
            session, agent=PORTAL, action=action, member=subject.member, outcome="closed", at=now
        )
        session.commit()
        return Attempt(False, "closed", subject.counters, subject=subject)
    reason = "closed" if closed else "wrong_pin" if subject.pin_hash else "no_pin"
    return record_failure(
        session,
        subject=subject,
        reason=reason,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
    )


def _gate(member_id: int, *, now: datetime, captcha_ok: bool) -> list[Any]:
    """The WHERE clause of `blocked`: the account is open to an attempt right now."""
    conditions = [
        col(Account.member_id) == member_id,
        col(Account.hard_locked_at).is_(None),
        or_(col(Account.locked_until).is_(None), col(Account.locked_until) <= now),
    ]
    if not captcha_ok:
        conditions.append(not_(col(Account.captcha_required)))
    return conditions


def record_failure(
    session: Session,
    *,
    subject: Subject,
    reason: str,
    action: str,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    """Count one failure atomically and apply the cool-down or hard lock it brings."""
    failures = session.exec(
        update(Account)
        .where(*_gate(subject.member_id, now=now, captcha_ok=captcha_ok))
        .values(failed_attempts=Account.failed_attempts + 1)
        .returning(col(Account.failed_attempts))
    ).scalar_one_or_none()
    if failures is None:  # another attempt locked the account in the meantime
        return _refuse_now(session, subject=subject, action=action, captcha_ok=captcha_ok, now=now)
    counters = after_failures(failures, now=now, settings=settings)
    values: dict[str, Any] = {
        "locked_until": counters.locked_until,
        "captcha_required": counters.captcha_required,
    }
    if counters.hard_locked:
        values["hard_locked_at"] = now
    session.exec(
        update(Account).where(col(Account.member_id) == subject.member_id).values(**values)
    )
    audit.record(
        session,
        agent=PORTAL,
        action=action,
        member=subject.member,
        outcome=reason,
        at=now,
        failures=failures,
        hard_locked=counters.hard_locked,
    )
    session.commit()
    return Attempt(False, reason, counters, counted=True, subject=subject)


def settle_success(
    session: Session,
    *,
    attempt: Attempt,
    values: Mapping[str, Any],
    action: str,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    """Reset the counters and write `values`, unless the account was locked or its PIN
    changed since the check; does not commit a success (the caller adds its audit row)."""
    subject = attempt.subject
    assert attempt.ok and subject is not None
    done = session.exec(
        update(Account)
        .where(*_gate(subject.member_id, now=now, captcha_ok=captcha_ok))
        .where(col(Account.pin_hash) == subject.pin_hash)
        .values(failed_attempts=0, locked_until=None, captcha_required=False, **values)
        .returning(col(Account.member_id))
    ).first()
    if done is not None:
        return attempt
    session.rollback()
    fresh = read_subject(session, subject.member.nir)
    assert fresh is not None
    if blocked(fresh.counters, now=now, captcha_ok=captcha_ok) is not None:
        return _refuse_now(session, subject=fresh, action=action, captcha_ok=captcha_ok, now=now)
    # The PIN was changed meanwhile: the one typed is no longer the member's.
    return record_failure(
        session,
        subject=fresh,
        reason="wrong_pin",
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
    )


def _refuse_now(
    session: Session, *, subject: Subject, action: str, captcha_ok: bool, now: datetime
) -> Attempt:
    session.rollback()
    fresh = read_subject(session, subject.member.nir) or subject
    block = blocked(fresh.counters, now=now, captcha_ok=captcha_ok) or Block("locked")
    return _refuse(session, subject=fresh, block=block, action=action, now=now)


def _refuse(
    session: Session, *, subject: Subject, block: Block, action: str, now: datetime
) -> Attempt:
    audit.record(
        session, agent=PORTAL, action=action, member=subject.member, outcome=block.reason, at=now
    )
    session.commit()
    return Attempt(False, block.reason, subject.counters, block=block, subject=subject)
