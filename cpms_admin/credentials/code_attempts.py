"""A one-time code typed on the portal: a guess of the same budget as a PIN.

A wrong code (or any code where none is live, or for a NIR that is no member's) is a failure
of the account, counted on the same counters as a wrong PIN, behind the same gate: cool-down,
CAPTCHA and hard lock. Asking for a new code refills nothing. Checking a code takes
microseconds, so the counters' row stays locked from the gate to the count: concurrent
guesses queue, and none is checked once the budget is spent.

One door stays open on a hard-locked account: a code an agent sent after the lock (the
portal sends none while it holds). The agent has stepped in; that code's own tries
(`CPMS_CODE_MAX_TRIES`) are all the guesses it allows.

The code the member already used, typed again (a second tab, the Back button), is no guess:
it is answered as such and costs nothing. Only someone who holds that very code can get that
answer, so it tells nobody else anything; it comes after the same gate as any code.
"""

from dataclasses import replace
from datetime import datetime

from sqlmodel import Session

from cpms_admin.credentials import codes
from cpms_admin.credentials.attempts import (
    Attempt,
    Subject,
    audit_attempt,
    read_subject,
    record_failure,
    refuse,
)
from cpms_admin.credentials.lockout import Block, Counters, blocked
from cpms_admin.db import transaction
from cpms_admin.models import Account, SecurityCode, pk
from cpms_admin.pepper import load_peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AuditAction, Blocked, PortalReason


def try_code(
    session: Session,
    *,
    nir: str,
    code: str,
    action: AuditAction,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    only_if_live: bool = False,
) -> tuple[Attempt, SecurityCode | None] | None:
    """Check `code` for the compact `nir`, in one unit of work. A refusal is recorded; a
    match is returned with its code, not consumed (`codes.consume_code`), so the caller can
    still refuse the new PIN. None, with `only_if_live`, when the member has no live code
    (the caller takes the secret for the current PIN), unless `code` is the one they used
    last."""
    pepper = load_peppers(settings)
    with transaction(session):
        subject = read_subject(session, nir=nir, settings=settings, lock_at=now)
        member = subject.member
        live = (
            codes.live_code(session, member_id=pk(member), now=now, lock=True) if member else None
        )
        used = codes.used_code(session, member_id=pk(member), now=now) if member else None
        if only_if_live and live is None and not codes.matches(code, used, pepper):
            return None
        opened = _agent_code_after_lock(session, live)
        counters = subject.counters
        if opened:  # an agent's code: the lock and its cool-down do not stand in its way
            counters = replace(counters, hard_locked=False, locked_until=None)
        block = blocked(counters, now=now, captcha_ok=captcha_ok, settings=settings)
        if block is not None:
            return refuse(session, subject=subject, block=block, action=action, now=now), None
        check = codes.check_code(
            session, live=live, used=used, code=code, pepper=pepper, settings=settings
        )
        if check.outcome == PortalReason.ok and member is not None:
            return Attempt(
                True, PortalReason.ok, counters, subject=subject, guessed="code"
            ), check.code
        if check.outcome == PortalReason.code_used and check.code is not None:
            return _typed_again(session, check.code, subject, counters, action=action, now=now)
        reason = PortalReason.unknown_member if member is None else check.outcome
        if opened:  # the account stays locked; the code's tries count, not the budget
            return _still_locked(session, subject=subject, action=action, reason=reason, now=now)
        failure = record_failure(
            session,
            subject=subject,
            action=action,
            captcha_ok=captcha_ok,
            settings=settings,
            now=now,
            guessed="code",
            reason=reason,
        )
        return failure, None


def _typed_again(
    session: Session,
    used: SecurityCode,
    subject: Subject,
    counters: Counters,
    *,
    action: AuditAction,
    now: datetime,
) -> tuple[Attempt, None]:
    """The code the member used last, typed again: refused and audited, but no guess."""
    reason = PortalReason.code_used
    audit_attempt(session, subject=subject, action=action, outcome=reason, now=now, code_id=used.id)
    return Attempt(False, reason, counters, subject=subject, guessed="code"), None


def _still_locked(
    session: Session, *, subject: Subject, action: AuditAction, reason: PortalReason, now: datetime
) -> tuple[Attempt, None]:
    """A wrong guess at the code an agent sent a locked account: audited, and answered as any
    locked account is, so the answer does not tell that an agent sent this NIR a code."""
    audit_attempt(session, subject=subject, action=action, outcome=reason, now=now, agent_code=True)
    locked = Block(Blocked.locked)
    return Attempt(False, reason, subject.counters, block=locked, subject=subject), None


def _agent_code_after_lock(session: Session, live: SecurityCode | None) -> bool:
    """Whether `live` is a code an agent asked for after the account's hard lock (see
    `codes.opens_hard_lock`)."""
    if live is None:
        return False
    account = session.get(Account, live.member_id)
    assert account is not None, "every member has an account row"
    return codes.opens_hard_lock(session, live, account.hard_locked_at)
