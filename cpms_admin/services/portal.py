"""The member portal's flows, as the portal imports them: log in, get a security code,
accept the Terms of Use. (Setting a PIN is in `pin_change`.)

Each result carries an internal `reason` and the French `message` the portal shows; an
unknown or closed NIR gets the same answers, figures and timing as a member's.
"""

from typing import Any

from sqlmodel import Session, select

from cpms_admin.clock import Clock
from cpms_admin.errors import InvalidInput, Refused
from cpms_admin.mail.transport import Transport
from cpms_admin.models import Member
from cpms_admin.nir import format_nir, mask_nir, parse_nir
from cpms_admin.services import audit, codes, notify, portal_text
from cpms_admin.services.attempts import PORTAL, check_pin, pin_hasher, settle_success
from cpms_admin.services.members import get_account, get_member
from cpms_admin.services.results import PortalResult, RequestCodeResult, attempt_result
from cpms_admin.settings import Settings


def login(
    session: Session,
    *,
    nir: str,
    pin: str,
    captcha_ok: bool = False,
    settings: Settings,
    clock: Clock,
) -> PortalResult:
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
    postal letter. An unknown or closed NIR gets the answer of a member without an e-mail
    address (ok, by post) and nothing is sent; only `reason` tells them apart."""
    compact = parse_nir(nir)
    now = clock()
    member = session.exec(select(Member).where(Member.nir == compact)).first()
    if member is None or member.status == "closed":
        reason = "unknown_member" if member is None else "closed"
        masked = {"nir": mask_nir(compact)} if member is None else {}
        audit.record(
            session,
            agent=PORTAL,
            action="portal.request_code",
            member=member,
            outcome=reason,
            at=now,
            **masked,
        )
        session.commit()
        return RequestCodeResult(True, reason, portal_text.CODE_BY_POST, channel="post")
    channel = notify.resolve_channel(member, "auto")
    notify.deliver_code(
        session,
        member=member,
        channel=channel,
        purpose=codes.purpose_for(get_account(session, member)),
        letter_kind="security_code",
        agent=PORTAL,
        action="portal.request_code",
        settings=settings,
        clock=clock,
        now=now,
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
    """Record the logged-in member's acceptance of the Terms of Use (current version only)."""
    current = settings.terms_version
    if version is not None and version != current:
        raise InvalidInput(f"the current Terms of Use version is {current}, not {version}")
    member = get_member(session, nir)
    if member.status == "closed":
        raise Refused(f"member {format_nir(member.nir)} is closed")
    account = get_account(session, member)
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
