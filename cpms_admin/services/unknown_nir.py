"""PIN attempts for a NIR that is not a member's, answered like a member's.

There is no account row to count on, so the failures are counted from the audit log (where
each attempt is recorded anyway) and run through the same lockout rules: the attempts left,
the cool-down, the CAPTCHA and the lock all follow the same pattern as for a real account,
and the same argon2 work is done, so nothing tells an attacker who is a member.
"""

from datetime import datetime

from sqlmodel import Session, col, func, select

from cpms_admin.lockout import Block, Counters, after_failures, blocked
from cpms_admin.models import AuditEvent
from cpms_admin.security.pins import PinHasher
from cpms_admin.services import audit
from cpms_admin.settings import Settings

PORTAL = "portal"  # the agent recorded for the portal's own actions
PIN_ACTIONS = ("portal.login", "portal.change_pin")


def unknown_counters(session: Session, *, nir: str, settings: Settings) -> Counters:
    """The counters an account would have after this NIR's failures so far."""
    count, last = session.exec(
        select(func.count(), func.max(AuditEvent.at)).where(
            col(AuditEvent.action).in_(PIN_ACTIONS),
            col(AuditEvent.outcome) == "unknown_member",
            col(AuditEvent.details).contains(f'"nir": "{nir}"'),
        )
    ).one()
    if not count or last is None:
        return Counters()
    return after_failures(count, now=last, settings=settings)


def attempt(
    session: Session,
    *,
    nir: str,
    pin: str,
    action: str,
    captcha_ok: bool,
    hasher: PinHasher,
    settings: Settings,
    now: datetime,
) -> tuple[Counters, Block | None]:
    """Record the attempt and commit; the counters after it, and the block it ran into
    (None when it was counted as a failure)."""
    counters = unknown_counters(session, nir=nir, settings=settings)
    block = blocked(counters, now=now, captcha_ok=captcha_ok)
    if block is not None:
        audit.record(
            session,
            agent=PORTAL,
            action=action,
            outcome="unknown_blocked",
            at=now,
            nir=nir,
            block=block.reason,
        )
        session.commit()
        return counters, block
    hasher.verify(None, pin)  # the same work as for a member
    audit.record(session, agent=PORTAL, action=action, outcome="unknown_member", at=now, nir=nir)
    session.commit()
    return after_failures(counters.failures + 1, now=now, settings=settings), None
