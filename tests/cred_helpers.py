"""Helpers for the credential tests: members with a PIN, codes read back from the outbox."""

import base64
import hashlib
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import bcrypt
from argon2 import PasswordHasher
from sqlmodel import Session, col, select

from cpms_admin.credentials import accounts
from cpms_admin.credentials.attempts import pin_hasher
from cpms_admin.models import Account, Member, SecurityCode, pk
from cpms_admin.portal import flows, pin_change
from cpms_admin.portal.answers import PortalResult
from cpms_admin.settings import Settings
from tests.harness import Cli
from tests.import_helpers import person, write_csv

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
    for path in sorted(settings.outbox.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# Digits a run writes that are no secret, though they hold 6-digit runs a code may match.
_INNOCENT_DIGITS = re.compile(
    rb"(?<=\d\d:\d\d:\d\d\.)\d{1,6}"  # a stored or logged time's fraction of a second
    rb"|\d{4}-\d\d-\d\d"  # a date (glued to the values around it in the database file)
    rb"|(?<=datetime\()[\d, ]+"  # a logged datetime's fields, its microseconds last
    rb"|0x[0-9a-f]+"  # an object's address in a logged repr
    rb"|(?<=in )\d+\.\d+s|(?<=since )\d+\.\d+s"  # SQLAlchemy's statement timings
    rb"|(?<=batch-)\d+-\d{8}-\d{6}"  # a letter batch's name: its number, date and time
    rb"|(?<='lock': )-?\d+|(?<='class': )\d+|(?<='cls': )\d+"  # advisory lock keys
)
# Salts (16 hex digits), SHA-256 digests and MACs (64), as the logs and tables show them:
# each a value of its own. A code glued to one makes a longer run, which is none of them.
_DIGEST = re.compile(rb"(?<![0-9A-Za-z])(?:[0-9a-f]{64}|[0-9a-f]{16})(?![0-9A-Za-z])")
_HEX_RUN = re.compile(rb"[0-9a-f]{16,}")
_NIR = re.compile(r"\d{15}\Z")


def innocent_digits_masked(
    haystacks: dict[str, bytes], tables: dict[str, list[tuple[Any, ...]]]
) -> dict[str, bytes]:
    """The `haystacks` a leak test searches, with the digits that are no secret masked:
    times, logged addresses, timings and lock keys, batch names, the NIRs stored in `tables`,
    and the salts and digests the haystacks show as values of their own, wherever they
    appear (in the database file, glued to their neighbours). A code is random: among the
    hundreds of 6-digit runs those hold, one matches it now and then, and a leak test would
    fail without a leak. A code written in clear stays, whatever it is glued to."""
    digests = {
        found[0]
        for haystack in haystacks.values()
        for found in _DIGEST.finditer(haystack)
        if re.search(rb"[a-f]", found[0]) or not found[0].strip(b"0")  # 0s: an unset hash
    }

    def known_digests(run: re.Match[bytes]) -> bytes:
        text, kept, at = run[0], [], 0
        while at < len(text):
            size = next((n for n in (64, 16) if text[at : at + n] in digests), 0)
            kept.append(b"<hex>" if size else text[at : at + 1])
            at += size or 1
        return b"".join(kept)

    nirs = [
        value.encode()
        for row in tables["member"]
        for value in row
        if isinstance(value, str) and _NIR.match(value)
    ]
    masked = {}
    for name, haystack in haystacks.items():
        for nir in nirs:
            haystack = haystack.replace(nir, b"<nir>")
        haystack = _HEX_RUN.sub(known_digests, haystack)
        masked[name] = _INNOCENT_DIGITS.sub(b"<digits>", haystack)
    return masked


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


HASH_COLUMNS = ("nir", "last_name", "first_name", "street", "postcode", "city", "pin_hash")
SALT = b"sel-de-guerande!"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _pbkdf2(pin: str, rounds: int = 1000) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), SALT, rounds)


# A PIN hash of each legacy format an import accepts, made from PIN.
LEGACY = {
    "argon2id": lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PIN),
    "bcrypt-2b": lambda: bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(rounds=4)).decode(),
    "bcrypt-2a": lambda: bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(4, prefix=b"2a")).decode(),
    "bcrypt-2y": lambda: "$2y$" + bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(4)).decode()[4:],
    # passlib: "adapted" base64 ('.' for '+'), rounds as a bare number
    "pbkdf2-passlib": lambda: "$pbkdf2-sha256$1000${}${}".format(
        _b64(SALT).replace("+", "."), _b64(_pbkdf2(PIN)).replace("+", ".")
    ),
    # PHC string format: i=rounds, standard base64 without padding
    "pbkdf2-phc": lambda: f"$pbkdf2-sha256$i=1000,l=32${_b64(SALT)}${_b64(_pbkdf2(PIN))}",
}


def import_hashes(cli: Cli, tmp_path: Path, hashes: list[str], *extra: str) -> Any:
    """`members import --json` of one member per PIN hash: the result, and the rows."""
    rows = [person(n, pin_hash=value) for n, value in enumerate(hashes, start=1)]
    path = write_csv(tmp_path / "legacy.csv", rows, columns=HASH_COLUMNS)
    return cli("--json", "members", "import", str(path), *extra), rows
