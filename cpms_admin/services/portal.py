"""The member portal's flows, as the portal imports them: log in, get a security code,
accept the Terms of Use. (Setting a PIN is in `pin_change`.)

Each result carries an internal `reason` and the French `message` the portal shows; an
unknown NIR gets the same message, figures and timing as a member's wrong PIN.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from cpms_admin.clock import Clock
from cpms_admin.errors import InvalidInput, NotFound, Refused
from cpms_admin.lockout import attempts_left, seconds_until
from cpms_admin.mail.transport import Transport
from cpms_admin.models import Account, Member, pk
from cpms_admin.nir import format_nir, parse_nir
from cpms_admin.services import audit, codes, notify, portal_text
from cpms_admin.services.attempts import PORTAL, Attempt, check_pin, pin_hasher, settle_success
from cpms_admin.settings import Settings


@dataclass(frozen=True)
class PortalResult:
    """What the portal gets back. `message` is shown to the member; the rest drives the page
    (CAPTCHA, wait) or is for the back-office (`reason`)."""

    ok: bool
    reason: str
    message: str
    remaining_attempts: int | None = None
    retry_after_seconds: int | None = None
    captcha_required: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


LoginResult = PortalResult


@dataclass(frozen=True)
class RequestCodeResult(PortalResult):
    channel: str | None = None  # email | post (post also for an unknown NIR)


def _account(session: Session, member: Member) -> Account:
    account = session.get(Account, pk(member), populate_existing=True)
    assert account is not None, "every member has an account row"
    return account


def attempt_result(attempt: Attempt, *, settings: Settings, now: datetime) -> PortalResult:
    """The portal's answer to a PIN attempt (login, or the current PIN of a change)."""
    counters = attempt.counters
    if attempt.ok:
        return PortalResult(True, "ok", portal_text.LOGGED_IN)
    if attempt.block is not None:
        left = 0 if attempt.block.reason == "locked" else attempts_left(counters.failures, settings)
        return PortalResult(
            False,
            attempt.reason,
            portal_text.blocked(attempt.block),
            remaining_attempts=left,
            retry_after_seconds=attempt.block.retry_after_seconds,
            captcha_required=counters.captcha_required,
        )
    if not attempt.counted:  # a closed member who typed the right PIN
        return PortalResult(False, attempt.reason, portal_text.CLOSED)
    return PortalResult(
        False,
        attempt.reason,
        portal_text.wrong_pin(counters, settings=settings, now=now),
        remaining_attempts=attempts_left(counters.failures, settings),
        retry_after_seconds=None
        if counters.hard_locked
        else seconds_until(counters.locked_until, now),
        captcha_required=counters.captcha_required,
    )


def login(
    session: Session,
    *,
    nir: str,
    pin: str,
    captcha_ok: bool = False,
    settings: Settings,
    clock: Clock,
) -> LoginResult:
    """Log in with NIR and PIN. A malformed NIR or PIN is InvalidInput and costs no attempt;
    a success resets the counters and upgrades an old or imported PIN hash."""
    now = clock()
    action = "portal.login"
    attempt = check_pin(
        session, nir=nir, pin=pin, action=action, captcha_ok=captcha_ok, settings=settings, now=now
    )
    subject = attempt.subject
    if attempt.ok and subject is not None:
        stored = subject.pin_hash or ""
        hasher = pin_hasher(settings)
        values: dict[str, Any] = {"last_login_at": now}
        if hasher.needs_rehash(stored):
            values["pin_hash"] = hasher.hash(pin)
        attempt = settle_success(
            session,
            attempt=attempt,
            values=values,
            action=action,
            captcha_ok=captcha_ok,
            settings=settings,
            now=now,
        )
        if attempt.ok:
            audit.record(
                session,
                agent=PORTAL,
                action=action,
                member=subject.member,
                at=now,
                rehashed="pin_hash" in values,
            )
            session.commit()
    return attempt_result(attempt, settings=settings, now=now)


def request_code(
    session: Session,
    *,
    nir: str,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
) -> RequestCodeResult:
    """ "Obtenir mon code de sécurité": an e-mail code when the address is known, else a
    postal letter. An unknown or closed NIR gets the postal answer and nothing is sent."""
    compact = parse_nir(nir)
    now = clock()
    member = session.exec(select(Member).where(Member.nir == compact)).first()
    if member is None or member.status == "closed":
        reason = "unknown_member" if member is None else "closed"
        audit.record(
            session,
            agent=PORTAL,
            action="portal.request_code",
            member=member,
            outcome=reason,
            at=now,
            nir=compact,
        )
        session.commit()
        return RequestCodeResult(False, reason, portal_text.CODE_BY_POST, channel="post")
    channel = notify.resolve_channel(member, "auto")
    delivery = notify.prepare_code(
        session,
        member=member,
        channel=channel,
        purpose=codes.purpose_for(_account(session, member)),
        letter_kind="security_code",
        settings=settings,
        now=now,
    )
    audit.record(
        session,
        agent=PORTAL,
        action="portal.request_code",
        member=member,
        at=now,
        **delivery.as_json(),
    )
    session.commit()
    notify.send_code(
        session,
        member=member,
        delivery=delivery,
        agent=PORTAL,
        settings=settings,
        clock=clock,
        transport=transport,
    )
    message = portal_text.CODE_BY_EMAIL if channel == "email" else portal_text.CODE_BY_POST
    return RequestCodeResult(True, "ok", message, channel=channel)


def accept_terms(
    session: Session,
    *,
    nir: str,
    version: str | None = None,
    settings: Settings,
    clock: Clock,
) -> PortalResult:
    """Record the member's acceptance of the Terms of Use (only the current version)."""
    current = settings.terms_version
    if version is not None and version != current:
        raise InvalidInput(f"the current Terms of Use version is {current}, not {version}")
    compact = parse_nir(nir)
    member = session.exec(select(Member).where(Member.nir == compact)).first()
    if member is None:
        raise NotFound(f"no member with NIR {format_nir(compact)}")
    if member.status == "closed":
        raise Refused(f"member {format_nir(compact)} is closed")
    account = _account(session, member)
    if account.terms_accepted_version != current:
        now = clock()
        account.terms_accepted_version, account.terms_accepted_at = current, now
        audit.record(
            session,
            agent=PORTAL,
            action="portal.accept_terms",
            member=member,
            at=now,
            version=current,
        )
        session.commit()
    return PortalResult(True, "ok", portal_text.TERMS_ACCEPTED)
