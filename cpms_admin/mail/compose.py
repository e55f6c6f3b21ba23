"""The e-mails members receive, in French, built from `templates/mail/` (text + HTML).

Member data is only ever inserted as text: HTML templates are autoescaped and nothing a
member typed is parsed as a template, so a name like `{{ 7*7 }}` prints as typed.
"""

from __future__ import annotations

import functools
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING, Any

from cpms_admin.errors import BadAddress, NotReady
from cpms_admin.french import french_date, paris_time
from cpms_admin.settings import Settings, templates_dir
from cpms_admin.vocabulary import Asker, PinChange, Purpose

if TYPE_CHECKING:
    import jinja2

_TITLES = {"M": "Monsieur", "MME": "Madame"}
# Why an e-mail cannot be made: its last error (the member's dossier words it in French).
LINE_BREAK = "{} must not contain a line break (header injection)"
INVALID_ADDRESS = "invalid e-mail address {}"
_CODE_SUBJECTS = {
    Purpose.first_login: (
        "Votre code de sécurité pour votre première connexion à l'Espace Adhérent CPMS"
    ),
    Purpose.pin_reset: "Votre code de sécurité pour l'Espace Adhérent CPMS",
}
_PIN_CHANGES = {
    PinChange.set: "créé",
    PinChange.changed: "modifié",
    PinChange.reset: "réinitialisé",
}


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "mail"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _render(name: str, context: dict[str, Any]) -> str:
    import jinja2

    try:
        template = _environment().get_template(name)
    except jinja2.TemplateNotFound:
        raise NotReady(f"e-mail template missing: mail/{name} (reinstall cpms-admin)") from None
    return template.render(context)


def _time(moment: datetime) -> str:
    return f"{moment.hour} h {moment.minute:02d}"


def _deadline(expires_at: datetime, now: datetime) -> str:
    """`jusqu'à 14 h 32` the same day, `jusqu'au 3 mars 2026 à 14 h 32` otherwise."""
    expires, today = paris_time(expires_at), paris_time(now)
    if expires.date() == today.date():
        return f"jusqu'à {_time(expires)}"
    return f"jusqu'au {french_date(expires.date())} à {_time(expires)}"


def _salutation(*, civility: str | None, first_name: str, last_name: str) -> str:
    title = _TITLES.get((civility or "").strip().upper())
    return f"Bonjour {title} {last_name}" if title else f"Bonjour {first_name} {last_name}"


def _refuse_line_breaks(**values: str) -> None:
    for name, value in values.items():
        if "\r" in value or "\n" in value:
            raise BadAddress(LINE_BREAK.format(name))


# Longer words in a display name made CPython's header folder write a blank line inside the
# headers (first and last names of 77 and 78 letters), ending them there: such a name is left
# out of `To:`, the address alone (the message's greeting still names the member).
_LONGEST_FOLDED_WORD = 70


def _recipient(*, to: str, display_name: str) -> Address:
    if any(len(word) > _LONGEST_FOLDED_WORD for word in display_name.split()):
        display_name = ""
    try:
        return Address(display_name=display_name, addr_spec=to.strip())
    except (ValueError, HeaderParseError):
        raise BadAddress(INVALID_ADDRESS.format(repr(to))) from None


def _message(
    *,
    settings: Settings,
    to: str,
    display_name: str,
    subject: str,
    template: str,
    context: dict[str, Any],
    now: datetime,
) -> EmailMessage:
    """A text message with its HTML alternative, headers checked before anything is built."""
    _refuse_line_breaks(to=to, name=display_name, subject=subject)  # mail_from: by Settings
    recipient = _recipient(to=to, display_name=display_name)
    context = {**context, "subject": subject, "portal_url": settings.portal_url}
    text = _render(f"{template}.txt.j2", context)
    html = _render(f"{template}.html.j2", context)
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Date"] = format_datetime(now)
    # Passing the domain also spares make_msgid a slow DNS look-up of our own host name.
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
    # Quoted-printable keeps French text intact through servers without 8BITMIME.
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def security_code_message(
    *,
    settings: Settings,
    to: str,
    first_name: str,
    last_name: str,
    civility: str | None,
    code: str,
    expires_at: datetime,
    purpose: str,
    now: datetime,
    asked_by: Asker = Asker.member,
) -> EmailMessage:
    """The e-mail carrying a single-use security code (first login or lost PIN), sent `now`,
    saying who `asked_by` for it: what the member should do if it was not them differs."""
    if purpose not in _CODE_SUBJECTS:
        raise ValueError(f"unknown code purpose {purpose!r}")
    if len(code) != 6 or not code.isdigit():
        raise ValueError("a security code is exactly 6 digits")
    return _message(
        settings=settings,
        to=to,
        display_name=f"{first_name} {last_name}",
        subject=_CODE_SUBJECTS[Purpose(purpose)],
        template="security_code",
        context={
            "salutation": _salutation(
                civility=civility, first_name=first_name, last_name=last_name
            ),
            "code": code,
            "deadline": _deadline(expires_at, now),
            "first_login": purpose == Purpose.first_login,
            "asked_by": asked_by,
        },
        now=now,
    )


def pin_changed_message(
    *,
    settings: Settings,
    to: str,
    first_name: str,
    last_name: str,
    civility: str | None,
    changed_at: datetime,
    how: PinChange,
) -> EmailMessage:
    """The notice sent after a PIN is set, changed or reset; it holds no secret."""
    when = paris_time(changed_at)
    return _message(
        settings=settings,
        to=to,
        display_name=f"{first_name} {last_name}",
        subject=f"Votre mot de passe de l'Espace Adhérent CPMS a été {_PIN_CHANGES[how]}",
        template="pin_changed",
        context={
            "salutation": _salutation(
                civility=civility, first_name=first_name, last_name=last_name
            ),
            "what": _PIN_CHANGES[how],
            "when": f"le {french_date(when.date())} à {_time(when)}",
        },
        now=changed_at,  # sent as soon as the change is committed
    )
