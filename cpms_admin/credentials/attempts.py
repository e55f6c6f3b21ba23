"""PIN attempts: the gate before verification, and atomic counting after it.

Verification (argon2, tens of milliseconds) runs outside any transaction: the counters are
read and that transaction ended first. The failure is then counted by `lockout.count_failure`,
which repeats the gate in its WHERE clause, so concurrent attempts are none lost, and none
counted or let in once another one has locked the account.

A NIR that is no member's has counters of its own (`unknown_nir`), read, gated and counted
the same way with the same argon2 work, so the portal's answers look the same as a member's.
"""

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.audit import PORTAL
from cpms_admin.credentials import unknown_nir
from cpms_admin.credentials.lockout import Block, Counters, blocked, count_failure, open_to_attempts
from cpms_admin.credentials.pins import (
    PinHasher,
    check_pin_format,
    configured_weakness,
    is_legacy,
)
from cpms_admin.db import transaction
from cpms_admin.members.nir import mask_nir, nir_to_find
from cpms_admin.models import Account, Member, pk
from cpms_admin.pepper import Peppers, load_peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AuditAction, Blocked, MemberStatus, PortalReason


def pin_hasher(settings: Settings) -> PinHasher:
    """The hasher for these settings and the database's peppers (NotReady when they are not
    its own)."""
    return _hasher(settings, load_peppers(settings))


@functools.lru_cache(maxsize=8)
def _hasher(settings: Settings, peppers: Peppers) -> PinHasher:
    """Cached per peppers too, so a rotation takes effect at once."""
    return PinHasher(
        pepper=peppers,
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
    )


@dataclass(frozen=True)
class Subject:
    """Whose counters an attempt runs on, read before the slow verification: a member's
    account, or (`member` None) those of a NIR that is no member's (`unknown_nir`)."""

    nir: str
    member: Member | None
    pin_hash: str | None
    counters: Counters


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
    guessed: str = "pin"  # what was guessed: pin | code (the words of the answer)


def read_subject(
    session: Session, *, nir: str, settings: Settings, lock_at: datetime | None = None
) -> Subject:
    """The member and their account as they are now, or the counters of an unknown NIR.
    With `lock_at` (now), the counters' row is held until the transaction ends (an unknown
    NIR's row is created for it), so that attempts on it queue one after the other."""
    member = session.exec(select(Member).where(Member.nir == nir)).first()
    if member is not None:
        query = select(Account).where(col(Account.member_id) == pk(member))
        if lock_at is not None:
            query = query.with_for_update()
        account = session.exec(query.execution_options(populate_existing=True)).one()
        return Subject(nir, member, account.pin_hash, Counters.of(account))
    keys = unknown_nir.keys_of(nir, settings)
    counters = unknown_nir.read_counters(session, keys, lock_at=lock_at)
    return Subject(nir, None, None, counters)


def audit_attempt(
    session: Session,
    *,
    subject: Subject,
    action: AuditAction,
    outcome: str,
    now: datetime,
    **details: Any,
) -> None:
    """The attempt's audit row; an unknown NIR is personal data too, so only masked."""
    if subject.member is None:
        details["nir"] = mask_nir(subject.nir)
    audit.record(
        session,
        agent=PORTAL,
        action=action,
        member=subject.member,
        outcome=outcome,
        at=now,
        **details,
    )


def sign_in(
    session: Session,
    *,
    nir: str,
    pin: str,
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    changes: Callable[[Subject], Mapping[str, Any]],
    success_details: Callable[[], Mapping[str, Any]] = dict,
) -> Attempt:
    """A member proving who they are with their PIN (a login, a PIN change, accepting the
    Terms), one unit of work either way: a refusal is recorded; when the PIN is right, the
    counters are reset, `changes(subject)` written and the success audited with
    `success_details()` (called after `changes`)."""
    attempt = _check_pin(
        session, nir=nir, pin=pin, action=action, captcha_ok=captcha_ok, settings=settings, now=now
    )
    if not attempt.ok or attempt.subject is None:
        return attempt
    return _settle_success(
        session,
        attempt=attempt,
        values=changes(attempt.subject),
        details=success_details,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
    )


def _check_pin(
    session: Session,
    *,
    nir: str,
    pin: str,
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    """Check a PIN. A failure or a block is recorded here; a success is returned
    unwritten, for `_settle_success` to write."""
    compact = nir_to_find(nir)
    check_pin_format(pin)
    hasher = pin_hasher(settings)
    with transaction(session):  # ended at once: no lock held during argon2
        subject = read_subject(session, nir=compact, settings=settings)
    block = blocked(subject.counters, now=now, captcha_ok=captcha_ok, settings=settings)
    if block is not None:
        return refuse(session, subject=subject, block=block, action=action, now=now)
    matches = hasher.verify(subject.pin_hash, pin)  # a dummy hash when there is none
    member = subject.member
    weak = _weak_imported_pin(subject, pin, settings) if matches else None
    if weak is not None:
        # Anyone with the NIR guesses it: never accepted, revoked (the member sets a new one
        # with a code), and answered as a wrong PIN, which tells no member from a stranger.
        assert member is not None  # only a member's PIN is imported
        with transaction(session):
            session.exec(
                update(Account)
                .where(
                    col(Account.member_id) == pk(member), col(Account.pin_hash) == subject.pin_hash
                )
                .values(pin_hash=None)
            )
            return record_failure(
                session,
                subject=subject,
                action=action,
                captcha_ok=captcha_ok,
                settings=settings,
                now=now,
                imported_pin_revoked=weak,
            )
    if matches and member is not None and member.status != MemberStatus.closed:
        return Attempt(True, PortalReason.ok, subject.counters, subject=subject)
    if matches:
        with transaction(session):
            audit_attempt(
                session, subject=subject, action=action, outcome=PortalReason.closed, now=now
            )
        return Attempt(False, PortalReason.closed, subject.counters, subject=subject)
    return record_failure(
        session, subject=subject, action=action, captcha_ok=captcha_ok, settings=settings, now=now
    )


def _weak_imported_pin(subject: Subject, pin: str, settings: Settings) -> str | None:
    """Why a PIN imported with its legacy hash is one the rules refuse (the NIR's birth
    date, 123456), when it is one: the old system allowed it, the member never chose it here."""
    member = subject.member
    if member is None or member.status == MemberStatus.closed or not is_legacy(subject.pin_hash):
        return None
    return configured_weakness(pin, settings=settings, nir=subject.nir)


def _failure_reason(subject: Subject) -> str:
    if subject.member is None:
        return PortalReason.unknown_member
    if subject.member.status == MemberStatus.closed:
        return PortalReason.closed
    return PortalReason.wrong_pin if subject.pin_hash else PortalReason.no_pin


def record_failure(
    session: Session,
    *,
    subject: Subject,
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    guessed: str = "pin",
    reason: str | None = None,
    **details: Any,
) -> Attempt:
    """Count one failure atomically, with the cool-down or hard lock it brings, and its
    audit row (with `details`). A wrong PIN and a wrong code (`guessed`) spend the same
    budget."""
    reason = reason or _failure_reason(subject)
    with transaction(session):
        if subject.member is None:
            counters = unknown_nir.record_failure(
                session, nir=subject.nir, captcha_ok=captcha_ok, settings=settings, now=now
            )
        else:
            counters = count_failure(
                session,
                table=Account,
                row=col(Account.member_id) == pk(subject.member),
                captcha_ok=captcha_ok,
                settings=settings,
                now=now,
            )
        if counters is not None:
            audit_attempt(
                session,
                subject=subject,
                action=action,
                outcome=reason,
                now=now,
                failures=counters.failures,
                hard_locked=counters.hard_locked,
                **details,
            )
    if counters is None:  # another attempt locked it in the meantime
        return _refuse_now(
            session,
            subject=subject,
            action=action,
            captcha_ok=captcha_ok,
            settings=settings,
            now=now,
        )
    return Attempt(False, reason, counters, counted=True, subject=subject, guessed=guessed)


def _settle_success(
    session: Session,
    *,
    attempt: Attempt,
    values: Mapping[str, Any],
    details: Callable[[], Mapping[str, Any]],
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    """Reset the counters, write `values` and audit the success, unless the account was
    locked or its PIN changed since the check."""
    subject = attempt.subject
    assert attempt.ok and subject is not None and subject.member is not None
    with transaction(session):
        done = session.exec(
            update(Account)
            .where(col(Account.member_id) == pk(subject.member))
            .where(*open_to_attempts(Account, now=now, captcha_ok=captcha_ok))
            .where(col(Account.pin_hash) == subject.pin_hash)
            .values(failed_attempts=0, locked_until=None, captcha_required=False, **values)
            .returning(col(Account.member_id))
        ).first()
        if done is not None:
            audit.record(
                session, agent=PORTAL, action=action, member=subject.member, at=now, **details()
            )
            return attempt
    fresh = read_subject(session, nir=subject.nir, settings=settings)
    block = blocked(fresh.counters, now=now, captcha_ok=captcha_ok, settings=settings)
    if block is not None:
        return refuse(session, subject=fresh, block=block, action=action, now=now)
    # The PIN was changed meanwhile: the one typed is no longer the member's.
    return record_failure(
        session, subject=fresh, action=action, captcha_ok=captcha_ok, settings=settings, now=now
    )


def _refuse_now(
    session: Session,
    *,
    subject: Subject,
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
) -> Attempt:
    fresh = read_subject(session, nir=subject.nir, settings=settings)
    block = blocked(fresh.counters, now=now, captcha_ok=captcha_ok, settings=settings) or Block(
        Blocked.locked
    )
    return refuse(session, subject=fresh, block=block, action=action, now=now)


def refuse(
    session: Session, *, subject: Subject, block: Block, action: AuditAction, now: datetime
) -> Attempt:
    """A blocked attempt, not counted. An unknown NIR keeps its reason, like its messages."""
    unknown = subject.member is None
    reason = PortalReason.unknown_member if unknown else block.reason
    outcome = "unknown_blocked" if unknown else block.reason
    with transaction(session):
        audit_attempt(
            session, subject=subject, action=action, outcome=outcome, now=now, block=block.reason
        )
    return Attempt(False, reason, subject.counters, block=block, subject=subject)
