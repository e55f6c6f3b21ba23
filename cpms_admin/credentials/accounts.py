"""What a support agent does to an account: unlock it, reset the PIN, send a new code.

Each action is one transaction with its audit row (who, why, what it changed); a code
e-mail leaves only after that commit (see `delivery`).
"""

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.clock import Clock
from cpms_admin.credentials import codes, delivery
from cpms_admin.credentials.lockout import account_state, lift_lockout
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput, Refused
from cpms_admin.mail.transport import Transport
from cpms_admin.members.nir import format_nir
from cpms_admin.members.records import get_account, get_member
from cpms_admin.models import Member, pk
from cpms_admin.pepper import load_peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    AuditAction,
    ChannelChoice,
    LetterKind,
    MemberStatus,
    Purpose,
    RevokeReason,
)


@dataclass(frozen=True)
class UnlockResult:
    member: Member
    state_before: str
    failed_attempts_before: int
    changed: bool

    def as_json(self) -> dict[str, Any]:
        """`account unlock --json`."""
        return {
            "nir": self.member.nir,
            "changed": self.changed,
            "state_before": self.state_before,
            "failed_attempts_before": self.failed_attempts_before,
        }


def require_reason(reason: str | None, what: str) -> str:
    """The reason an agent gave, checked before anything changes: it goes to the audit log."""
    if reason is None or not reason.strip():
        raise InvalidInput(f"a reason is required to {what} (--reason, recorded in the audit log)")
    return audit.clean_text(reason, what="the reason", max_length=audit.REASON_MAX_LENGTH)


def _open_member(session: Session, nir: str) -> Member:
    member = get_member(session, nir)
    if member.status == MemberStatus.closed:
        raise Refused(f"member {format_nir(member.nir)} is closed: they cannot log in")
    return member


def unlock_account(
    session: Session, *, nir: str, agent: str, reason: str, clock: Clock
) -> UnlockResult:
    """Clear the failures, the cool-down, the CAPTCHA flag and the hard lock. Unlocking an
    account that is not locked changes nothing (the request is still audited)."""
    why = require_reason(reason, "unlock an account")
    with transaction(session):
        member = get_member(session, nir)
        account = get_account(session, member)
        now = clock()
        before = account_state(account, now)
        failures = account.failed_attempts
        changed = lift_lockout(account)
        audit.record(
            session,
            agent=agent,
            action=AuditAction.account_unlock,
            member=member,
            reason=why,
            outcome="ok" if changed else "noop",
            at=now,
            state_before=before,
            failed_attempts_before=failures,
        )
    return UnlockResult(member, before, failures, changed)


@dataclass(frozen=True)
class PinReset:
    """A reset's code on its way, and whether there was a PIN to revoke."""

    sent: delivery.CodeDelivery
    had_pin: bool

    @property
    def pin_before(self) -> str:
        """What there was to reset, in the agent's words."""
        if self.had_pin:
            return "the old PIN no longer works"
        if self.sent.purpose == Purpose.first_login:
            return "the member had no PIN yet"
        return "the PIN was reset before and not set again since"

    def as_json(self) -> dict[str, Any]:
        """`pin reset --json`: the code's delivery (docs/scripting.md)."""
        return self.sent.as_json()


def reset_pin(
    session: Session,
    *,
    nir: str,
    channel: ChannelChoice = ChannelChoice.auto,
    agent: str,
    reason: str,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
) -> PinReset:
    """Invalidate the PIN at once (and any code in flight) and send a reset code. The
    lockout stays until the member sets a new PIN with that code, which lifts it. A member
    who never had a PIN gets a first-login code, whose e-mail or letter greets a newcomer
    (a reset's would tell them their old password no longer works)."""
    why = require_reason(reason, "reset a PIN")
    with transaction(session):  # the e-mail leaves once the reset is committed
        member = _open_member(session, nir)
        resolved = delivery.resolve_channel(member, channel)
        load_peppers(settings)  # fail before changing anything when it is missing
        now = clock()
        account = get_account(session, member)
        had_pin = account.pin_hash is not None
        purpose = codes.purpose_for(account)
        account.pin_hash = None  # pin_set_at stays: when they last had one
        revoked = codes.revoke_pending(session, member_id=pk(member), reason=RevokeReason.pin_reset)
        sent = delivery.deliver_code(
            session,
            member=member,
            channel=resolved,
            purpose=purpose,
            letter_kind=LetterKind.pin_reset
            if purpose == Purpose.pin_reset
            else LetterKind.welcome,
            agent=agent,
            action=AuditAction.pin_reset,
            reason=why,
            settings=settings,
            clock=clock,
            now=now,
            transport=transport,
            had_pin=had_pin,
            revoked_codes=len(revoked),
            # Exit 1 must not read as "nothing happened": the member can no longer log in.
            if_unsent=" The PIN stays reset and older codes revoked: the member cannot log "
            "in until they get a code.",
        )
        return PinReset(sent, had_pin)


def issue_member_code(
    session: Session,
    *,
    nir: str,
    channel: ChannelChoice = ChannelChoice.auto,
    agent: str,
    reason: str | None = None,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
) -> delivery.CodeDelivery:
    """Send a new code (first login when no PIN is set, else reset). It revokes older
    pending codes once it reached the member: for an e-mail once sent, for a letter when its
    batch commits."""
    member = _open_member(session, nir)
    resolved = delivery.resolve_channel(member, channel)
    load_peppers(settings)
    now = clock()
    return delivery.deliver_code(
        session,
        member=member,
        channel=resolved,
        purpose=codes.purpose_for(get_account(session, member)),
        letter_kind=LetterKind.security_code,
        agent=agent,
        action=AuditAction.code_issue,
        reason=reason.strip() if reason else None,
        settings=settings,
        clock=clock,
        now=now,
        transport=transport,
    )
