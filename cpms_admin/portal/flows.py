"""The member portal's flows, as the portal imports them: log in, get a security code,
accept the Terms of Use. (Setting a PIN is in `pin_change`.)

Each result carries an internal `reason` and the French `message` the portal shows; an
unknown or closed NIR gets the same answers, figures and timing as a member's. A code
request is answered before its e-mail leaves (`CodeRequestAnswer.send`).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from cpms_admin.audit import PORTAL
from cpms_admin.clock import Clock
from cpms_admin.credentials import codes, delivery, unknown_nir
from cpms_admin.credentials.attempts import (
    Subject,
    audit_attempt,
    pin_hasher,
    read_subject,
    sign_in,
)
from cpms_admin.credentials.lockout import blocked
from cpms_admin.credentials.on_its_way import on_its_way
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput
from cpms_admin.mail.transport import Transport
from cpms_admin.members import undeliverable
from cpms_admin.members.nir import nir_to_find
from cpms_admin.members.records import get_account
from cpms_admin.models import Member, pk
from cpms_admin.portal import answers, code_requests
from cpms_admin.portal.answers import PortalResult, attempt_result
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AuditAction, ChannelChoice, LetterKind, MemberStatus, PortalReason


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
    action = AuditAction.portal_login
    hasher = pin_hasher(settings)
    rehashed = False

    def changes(subject: Subject) -> dict[str, Any]:
        """The login, and the PIN's hash made anew when it is old or imported."""
        nonlocal rehashed
        rehashed = hasher.needs_rehash(subject.pin_hash or "")
        return {"last_login_at": now, **({"pin_hash": hasher.hash(pin)} if rehashed else {})}

    attempt = sign_in(
        session,
        nir=nir,
        pin=pin,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        changes=changes,
        success_details=lambda: {"rehashed": rehashed},
    )
    return attempt_result(attempt, settings=settings, now=now)


@dataclass(frozen=True)
class CodeRequestAnswer:
    """The portal's answer to a code request, and `send`, to call once it was given."""

    answer: PortalResult
    send: Callable[[], None] = lambda: None


def request_code(
    session: Session,
    *,
    nir: str,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
) -> CodeRequestAnswer:
    """ "Obtenir mon code de sécurité": a code by e-mail when the address is known, else a
    postal letter.

    Every NIR gets the same answer, a member or not, sent or refused (only `reason` tells
    them apart), for the same work: the request is logged and audited, then committed.
    The code itself is made and sent by `send`, after the answer, so neither its cost nor
    its fate shows in the answer. Nothing is sent when the NIR is past its daily requests or
    its account in a cool-down or locked (`rate_limited`), when a letter is in the post,
    being printed or sent by an agent (`on_its_way`: a new code would revoke it), and for an
    unknown or closed NIR."""
    compact = nir_to_find(nir)
    now = clock()
    action = AuditAction.portal_request_code
    with transaction(session):
        subject = read_subject(session, nir=compact, settings=settings)
        key = unknown_nir.request_key(compact, settings)
        admitted = code_requests.lock_and_count(session, key=key, now=now)
        refusal = _request_refusal(
            session, subject=subject, admitted=admitted, settings=settings, now=now
        )
        code_requests.log_request(
            session, key=key, now=now, counted=refusal != PortalReason.rate_limited
        )
        audit_attempt(
            session, subject=subject, action=action, outcome=refusal or PortalReason.ok, now=now
        )
    answer = PortalResult(True, refusal or PortalReason.ok, answers.CODE_REQUESTED)
    member = subject.member
    if refusal is not None or member is None:
        return CodeRequestAnswer(answer)
    send = functools.partial(
        _send_requested_code,
        session,
        member=member,
        settings=settings,
        clock=clock,
        transport=transport,
    )
    return CodeRequestAnswer(answer, send)


def _send_requested_code(
    session: Session,
    *,
    member: Member,
    settings: Settings,
    clock: Clock,
    transport: Transport | None,
) -> None:
    delivery.deliver_code(
        session,
        member=member,
        channel=delivery.resolve_channel(member, ChannelChoice.auto),
        purpose=codes.purpose_for(get_account(session, member)),
        letter_kind=LetterKind.security_code,
        agent=PORTAL,
        action=AuditAction.portal_send_code,
        settings=settings,
        clock=clock,
        now=clock(),
        transport=transport,
    )


def _request_refusal(
    session: Session, *, subject: Subject, admitted: int, settings: Settings, now: datetime
) -> str | None:
    """Why a request sends nothing (the internal reason), or None. Every request runs the
    same queries, an unknown NIR's too (on no member's rows): they take the same time."""
    member = subject.member
    way = on_its_way(session, member_id=pk(member) if member else 0, now=now, asked_by_member=True)
    if admitted >= settings.code_requests_per_day:
        return PortalReason.rate_limited
    if blocked(subject.counters, now=now, captcha_ok=True, settings=settings) is not None:
        return PortalReason.rate_limited  # a cool-down or a hard lock: no new code to guess at
    if member is None:
        return PortalReason.unknown_member
    if member.status == MemberStatus.closed:
        return PortalReason.closed
    if way is None and not member.email and undeliverable.is_flagged(member):
        return PortalReason.undeliverable  # the same answer: an agent must fix the address
    return None if way is None else PortalReason.on_its_way


def accept_terms(
    session: Session,
    *,
    nir: str,
    pin: str,
    version: str | None = None,
    captcha_ok: bool = False,
    settings: Settings,
    clock: Clock,
) -> PortalResult:
    """Record that the member, logged in with their PIN, accepts the current Terms of Use.
    The PIN is checked like a login (the same budget; an unknown NIR is a wrong PIN)."""
    current = settings.terms_version
    if version is not None and version != current:
        raise InvalidInput(f"the current Terms of Use version is {current}, not {version}")
    now = clock()
    action = AuditAction.portal_accept_terms
    already = False

    def changes(subject: Subject) -> dict[str, Any]:
        """The acceptance, unless this version was accepted before (its date stays)."""
        nonlocal already
        assert subject.member is not None
        already = get_account(session, subject.member).terms_accepted_version == current
        return {} if already else {"terms_accepted_version": current, "terms_accepted_at": now}

    attempt = sign_in(
        session,
        nir=nir,
        pin=pin,
        action=action,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        changes=changes,
        success_details=lambda: {"outcome": "noop" if already else "ok", "version": current},
    )
    if not attempt.ok:
        return attempt_result(attempt, settings=settings, now=now)
    return PortalResult(True, PortalReason.ok, answers.TERMS_ACCEPTED)
