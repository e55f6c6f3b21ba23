"""Helpers for the credential tests: members with a PIN, codes read back from the outbox."""

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.credentials import accounts
from cpms_admin.credentials.attempts import pin_hasher
from cpms_admin.models import Account, Member, SecurityCode, pk
from cpms_admin.portal import flows, pin_change
from cpms_admin.portal.answers import PortalResult
from cpms_admin.settings import Settings

PIN = "482915"
NEW_PIN = "739264"
_CODE_LINE = re.compile(r"Votre code de sécurité : ([0-9]{6})")


def account_of(session: Session, member: Member) -> Account:
    account = session.get(Account, pk(member), populate_existing=True)
    assert account is not None
    return account


def give_pin(session: Session, settings: Settings, member: Member, pin: str = PIN) -> None:
    account = account_of(session, member)
    account.pin_hash = pin_hasher(settings).hash(pin)
    account.pin_set_at = datetime(2026, 1, 5, tzinfo=UTC)
    session.commit()


def outbox(settings: Settings) -> list[EmailMessage]:
    """Every message the file transport wrote, oldest first."""
    messages = []
    for path in sorted(Path(settings.mail_dir).glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def mailed_codes(settings: Settings) -> list[str]:
    """The codes in the outbox, oldest first."""
    found = (_CODE_LINE.search(text_of(message)) for message in outbox(settings))
    return [match[1] for match in found if match]


def email_code(session: Session, settings: Settings, clock: Any, member: Member) -> str:
    """Have an agent e-mail a code to the member; the code as the member reads it."""
    accounts.issue_member_code(
        session, nir=member.nir, channel="email", agent="agent.test", settings=settings, clock=clock
    )
    return mailed_codes(settings)[-1]


def codes_of(session: Session, member: Member) -> list[SecurityCode]:
    statement = select(SecurityCode).where(SecurityCode.member_id == pk(member))
    rows = session.exec(statement.order_by(col(SecurityCode.id))).all()
    for row in rows:
        session.refresh(row)
    return list(rows)


def login(
    session: Session, settings: Settings, clock: Any, nir: str, pin: str, *, captcha: bool = False
) -> PortalResult:
    return flows.login(
        session, nir=nir, pin=pin, captcha_ok=captcha, settings=settings, clock=clock
    )


def set_pin(
    session: Session,
    settings: Settings,
    clock: Any,
    nir: str,
    secret: str,
    new_pin: str = NEW_PIN,
    confirmation: str | None = None,
    **options: Any,
) -> PortalResult:
    options.setdefault("using", "auto")
    return pin_change.set_pin(
        session,
        nir=nir,
        secret=secret,
        new_pin=new_pin,
        confirmation=new_pin if confirmation is None else confirmation,
        settings=settings,
        clock=clock,
        **options,
    )
