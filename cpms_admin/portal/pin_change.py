"""Setting a PIN from the portal: with a one-time code (first login, lost PIN) or with the
current PIN (change). The new PIN is typed twice.

A mismatch or a guessable PIN (from the NIR's birth year and month too) is refused before
anything is spent: no try of the code, no failed attempt.

A wrong code spends the account's one budget of guesses, like a wrong PIN (see
`code_attempts`), and gets the same words whoever asked, so the answer tells nobody who is
a member or who has a live code. The code that set the member's PIN, sent again, is told
apart and costs nothing (`code_used`): only its holder can send it. `auto` (a command-line
convenience for QA; the portal knows which form the member filled in) takes the secret as
the code when the member has a live one or it is their last used code, else as the current
PIN, so its answers do tell a member with a live code apart.
"""

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.audit import PORTAL
from cpms_admin.clock import Clock
from cpms_admin.credentials import code_attempts, codes, delivery
from cpms_admin.credentials.attempts import Subject, audit_attempt, pin_hasher, sign_in
from cpms_admin.credentials.lockout import lift_lockout
from cpms_admin.credentials.pins import check_pin_format, configured_weakness
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput
from cpms_admin.faults import failpoint
from cpms_admin.mail.transport import Transport
from cpms_admin.members.nir import nir_to_find
from cpms_admin.members.records import get_account
from cpms_admin.models import Member, SecurityCode, pk
from cpms_admin.portal import answers
from cpms_admin.portal.answers import PortalResult, attempt_result
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    AuditAction,
    CodeStatus,
    MemberStatus,
    PinChange,
    PinSecret,
    PortalReason,
    Purpose,
)

# Given the notice to send, sends it (or keeps it to send after the answer).
Notify = Callable[[Callable[[], object]], None]
# Tells the member their PIN changed, and how (through `Notify`).
Tell = Callable[[Member, PinChange], None]


def _now(send: Callable[[], object]) -> None:
    send()


def set_pin(
    session: Session,
    *,
    nir: str,
    secret: str,
    new_pin: str,
    confirmation: str,
    using: PinSecret,
    captcha_ok: bool = False,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
    notify: Notify = _now,
) -> PortalResult:
    """Set a new PIN. `secret` is the one-time code or the current PIN, as `using` says: the
    portal knows which form the member filled in. `auto` (for QA at the command line) takes
    it as the code when the member has a live one, else as the current PIN; its answers tell
    a member with a live code apart (a code's words, no argon2), so the portal never uses it.

    The "PIN changed" e-mail is sent once the change is committed, by `notify`: at once, or
    later by a caller that answers the member first (a slow mail server must not hold the
    answer)."""
    compact = nir_to_find(nir)
    if not (len(secret) == 6 and secret.isascii() and secret.isdigit()):
        raise InvalidInput("the security code or current PIN must be exactly 6 digits (0-9)")
    check_pin_format(new_pin)
    if new_pin != confirmation:
        return PortalResult(False, PortalReason.mismatch, answers.MISMATCH)
    # Judged by the NIR only (a birth date on file must match its year and month): whoever
    # asks typed it, so the answer tells them nothing, and it comes before any guess.
    weakness = configured_weakness(new_pin, settings=settings, nir=compact)
    if weakness is not None:
        return PortalResult(False, PortalReason.weak_pin, answers.weak_pin(weakness))
    now = clock()
    tell = _teller(now=now, settings=settings, transport=transport, notify=notify)
    if using != PinSecret.pin:
        result = _with_code(
            session,
            nir=compact,
            code=secret,
            new_pin=new_pin,
            fall_back=using == PinSecret.auto,
            captcha_ok=captcha_ok,
            settings=settings,
            now=now,
            tell=tell,
        )
        if result is not None:
            return result
    return _with_current_pin(
        session,
        nir=compact,
        pin=secret,
        new_pin=new_pin,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        tell=tell,
    )


def _teller(
    *, now: datetime, settings: Settings, transport: Transport | None, notify: Notify
) -> Tell:
    """How a PIN saved at `now` is told: the "PIN changed" e-mail, handed to `notify` (each
    path calls it once the change is committed)."""

    def tell(member: Member, how: PinChange) -> None:
        notify(
            lambda: delivery.notify_pin_changed(
                member=member, how=how, changed_at=now, settings=settings, transport=transport
            )
        )

    return tell


def _with_code(
    session: Session,
    *,
    nir: str,
    code: str,
    new_pin: str,
    fall_back: bool,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    tell: Tell,
) -> PortalResult | None:
    """Set the PIN with the member's live code. None when there is no live code and
    `fall_back` is set (the caller tries the secret as the current PIN)."""
    action = AuditAction.portal_set_pin
    tried = code_attempts.try_code(
        session,
        nir=nir,
        code=code,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        only_if_live=fall_back,
    )
    if tried is None:
        return None
    attempt, live = tried
    subject = attempt.subject
    if not attempt.ok or live is None or subject is None or subject.member is None:
        return attempt_result(attempt, settings=settings, now=now)
    member = subject.member
    if member.status == MemberStatus.closed:
        return PortalResult(False, PortalReason.closed, answers.CLOSED)
    new_hash = pin_hasher(settings).hash(new_pin)  # no lock held: the match wrote nothing
    failpoint("portal.before_save_pin")
    saved = _save_pin(
        session,
        subject=subject,
        live=live,
        new_hash=new_hash,
        settings=settings,
        now=now,
        tell=tell,
    )
    if saved == PortalReason.code_used:  # by the same member's other tab, meanwhile
        return attempt_result(replace(attempt, ok=False, reason=saved), settings=settings, now=now)
    if saved == PortalReason.dead_code:  # revoked or expired while the PIN was hashed
        return PortalResult(False, saved, answers.CODE_REFUSED)
    return PortalResult(True, PortalReason.ok, answers.PIN_SAVED)


def _save_pin(
    session: Session,
    *,
    subject: Subject,
    live: SecurityCode,
    new_hash: str,
    settings: Settings,
    now: datetime,
    tell: Tell,
) -> PortalReason:
    """Use the code and store the new PIN, lifting any lockout, in one unit of work; tell
    the member once it is committed (`ok`). When the code was used (`code_used`: another tab
    of the member's was quicker), revoked or expired (`dead_code`) meanwhile, the attempt is
    recorded as such and nothing else changes."""
    member = subject.member
    assert member is not None
    with transaction(session) as work:
        # The account's row before the code's, as every attempt takes them (`try_code`):
        # taken the other way round, two tabs sending one code deadlock on PostgreSQL.
        account = get_account(session, member, lock=True)
        if not codes.consume_code(session, code_id=pk(live), now=now):
            return _code_spent_meanwhile(session, subject=subject, live=live, now=now)
        failpoint("portal.code_consumed")
        how = (
            PinChange.reset
            if account.pin_hash or live.purpose == Purpose.pin_reset
            else PinChange.set
        )
        account.pin_hash, account.pin_set_at = new_hash, now
        lifted = lift_lockout(account)
        session.add(account)
        audit.record(
            session,
            agent=PORTAL,
            action=AuditAction.portal_set_pin,
            member=member,
            at=now,
            how=how,
            code_id=live.id,
            lifted_lockout=lifted,
        )
        work.after_commit(lambda: tell(member, how))
    return PortalReason.ok


def _code_spent_meanwhile(
    session: Session, *, subject: Subject, live: SecurityCode, now: datetime
) -> PortalReason:
    """Record the attempt whose code another tab used (`code_used`), or that was revoked or
    expired (`dead_code`), while its PIN was hashed."""
    status = session.exec(select(SecurityCode.status).where(col(SecurityCode.id) == pk(live))).one()
    reason = PortalReason.code_used if status == CodeStatus.used else PortalReason.dead_code
    audit_attempt(
        session,
        subject=subject,
        action=AuditAction.portal_set_pin,
        outcome=reason,
        now=now,
        code_id=live.id,
    )
    return reason


def _with_current_pin(
    session: Session,
    *,
    nir: str,
    pin: str,
    new_pin: str,
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    tell: Tell,
) -> PortalResult:
    action = AuditAction.portal_change_pin
    attempt = sign_in(
        session,
        nir=nir,
        pin=pin,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        changes=lambda _: {"pin_hash": pin_hasher(settings).hash(new_pin), "pin_set_at": now},
        success_details=lambda: {"how": PinChange.changed},
    )
    if not attempt.ok or attempt.subject is None or attempt.subject.member is None:
        return attempt_result(attempt, settings=settings, now=now)
    member = attempt.subject.member
    tell(member, PinChange.changed)
    return PortalResult(True, PortalReason.ok, answers.PIN_SAVED)
