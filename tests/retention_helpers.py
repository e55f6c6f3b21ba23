"""Helpers for the retention tests: a world with data on both sides of every period, made at
fixed moments of the test's clock, and what the disk and the database hold, to compare."""

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.models import AuditEvent, CodeRequest, UnknownLogin
from tests.cred_helpers import PIN
from tests.factories import make_nir
from tests.harness import Cli, FakeClock
from tests.letters_helpers import batch, printed_codes

DAY = timedelta(days=1)


def eml_name(at: datetime) -> str:
    """The name `mail/transport.FileTransport` gives an e-mail file written at `at`."""
    return f"{at:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}.eml"


def write_eml(directory: Path, at: datetime, text: str = "Votre code : 123456") -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / eml_name(at)
    path.write_text(text)
    path.chmod(0o600)
    return path


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (links not followed): its kind and content digest or target."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path)] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[str(path)] = "dir"
        else:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def add_member(cli: Cli, last_name: str, *options: str) -> str:
    """`member add` at the clock's time; the new member's NIR."""
    nir = make_nir()
    added = cli(
        "member", "add", "--nir", nir, "--last-name", last_name, "--first-name", "Anne",
        "--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon", *options,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    return nir


def close(cli: Cli, nir: str) -> None:
    closed = cli("member", "close", nir, "--reason", "a quitté la mutuelle")
    assert closed.exit_code == 0, closed.output


@dataclass
class World:
    """What `build_world` made: the NIRs and paths each test checks."""

    now: datetime
    old_closed: str  # closed 731 days ago: to pseudonymise
    young_closed: str  # closed 729 days ago: kept
    active: str
    old_batch: Path  # printed 40 days ago
    young_batch: Path  # printed 5 days ago, its code still live: kept
    used_batch: Path  # printed 3 days ago, its code used since: no live code left
    mail_dir: Path
    young_mail: Path
    old_mail: Path
    old_temporary: Path  # a write killed half-way, 2 days ago
    planted: Path  # a link with an e-mail file's name, 2 days old, pointing outside
    outside: Path  # what it points to


def build_world(cli: Cli, session: Session, clock: FakeClock, tmp_path: Path) -> World:
    """Data on both sides of every retention period (the default settings), made at the
    clock's moments: counters, code requests, e-mail files, batches, closed members, and
    the audit events all of this leaves."""
    now = clock.now
    clock.now = now - 731 * DAY
    old_closed = add_member(cli, "Ancienne")
    close(cli, old_closed)
    clock.now = now - 729 * DAY
    young_closed = add_member(cli, "Récente")
    close(cli, young_closed)
    out = tmp_path / "print"
    made = {}
    for days, name in ((40, "old"), (5, "young"), (3, "used")):
        clock.now = now - days * DAY
        nir = add_member(cli, name.capitalize())
        summary = batch(cli, out)
        made[name] = Path(summary["directory"])
        if name == "used":
            (code,) = printed_codes(summary).values()
            stdin = f"{code}\n{PIN}\n{PIN}\n"
            set_pin = cli("portal", "set-pin", nir, "--with", "code", input=stdin)
            assert set_pin.exit_code == 0, set_pin.output
    clock.now = now
    active = add_member(cli, "Active")
    session.add_all(
        [
            UnknownLogin(subject="a" * 64, failed_attempts=10, last_attempt_at=now - 181 * DAY),
            UnknownLogin(subject="b" * 64, failed_attempts=3, last_attempt_at=now - 180 * DAY),
            UnknownLogin(subject="c" * 64, failed_attempts=1, last_attempt_at=now - DAY),
            CodeRequest(subject="a" * 64, at=now - timedelta(hours=25), counted=True),
            CodeRequest(subject="c" * 64, at=now - timedelta(hours=23), counted=True),
        ]
    )
    session.commit()
    mail_dir = Path(cli.settings.mail_dir)
    old_mail = write_eml(mail_dir, now - 2 * DAY)
    young_mail = write_eml(mail_dir, now - timedelta(hours=12))
    old_temporary = mail_dir / f".{eml_name(now - 2 * DAY)}.0badf00d.tmp"
    old_temporary.write_text("half a message")
    (mail_dir / "README.txt").write_text("not an e-mail file: left alone")
    outside = tmp_path / "elsewhere" / "precious.eml"
    outside.parent.mkdir()
    outside.write_text("someone else's")
    planted = mail_dir / eml_name(now - 3 * DAY)
    planted.symlink_to(outside)
    return World(
        now=now,
        old_closed=old_closed,
        young_closed=young_closed,
        active=active,
        old_batch=made["old"],
        young_batch=made["young"],
        used_batch=made["used"],
        mail_dir=mail_dir,
        young_mail=young_mail,
        old_mail=old_mail,
        old_temporary=old_temporary,
        planted=planted,
        outside=outside,
    )


def old_events(session: Session, before: datetime) -> list[tuple[Any, ...]]:
    """The audit events older than `before`, as stored."""
    session.rollback()  # a fresh snapshot, with what the commands did
    rows = session.exec(
        select(AuditEvent).where(col(AuditEvent.at) < before).order_by(col(AuditEvent.id))
    )
    return [
        (e.id, e.at, e.agent, e.action, e.member_id, e.reason, e.outcome, e.details) for e in rows
    ]


def purge(cli: Cli, *options: str) -> tuple[int, dict[str, Any], str]:
    """`purge --json`: its exit code, its document and what it said on stderr."""
    result = cli("--json", "purge", *options)
    return result.exit_code, json.loads(result.stdout), result.stderr


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {category["name"]: category for category in document["categories"]}
