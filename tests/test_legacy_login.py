"""PIN hashes carried over by an import: each legacy format logs in with the old PIN through
`portal login` and is replaced by the current peppered argon2id hash on that first login;
unknown or malformed formats are refused per row, with the reason and never the hash."""

import json
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from argon2 import PasswordHasher
from sqlmodel import Session, select

from cpms_admin.credentials.pins import nir_date_pins
from cpms_admin.members.records import get_member
from cpms_admin.models import Account, Member
from cpms_admin.vocabulary import PinWeakness
from tests.cred_helpers import LEGACY, PIN, import_hashes
from tests.harness import Cli
from tests.import_helpers import person, report_rows

WRONG = "739264"


def stored_hash(session: Session, nir: str) -> str | None:
    session.rollback()
    account = session.get(Account, get_member(session, nir).id)
    assert account is not None
    return account.pin_hash


def login(cli: Cli, nir: str, pin: str) -> dict[str, Any]:
    result = cli("--json", "portal", "login", nir, input=f"{pin}\n")
    data: dict[str, Any] = json.loads(result.stdout)
    assert result.exit_code == (0 if data["ok"] else 1)
    return data


@pytest.mark.parametrize("kind", list(LEGACY))
def test_each_legacy_format_logs_in_and_is_upgraded(
    cli: Cli, session: Session, tmp_path: Path, kind: str
) -> None:
    legacy = LEGACY[kind]()
    result, rows = import_hashes(cli, tmp_path, [legacy])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["created"] == 1
    nir = rows[0]["nir"]
    sealed = stored_hash(session, nir)
    # Sealed with the pepper: a stolen database does not hold the hash to brute-force.
    assert sealed is not None and sealed.startswith("legacy:k1:")
    digest = legacy.rsplit("$", 1)[-1]
    assert digest not in sealed and legacy[:7] not in sealed
    shown = json.loads(cli("--json", "member", "show", nir).stdout)
    assert shown["account"]["state"] == "active" and shown["account"]["pin_set"] is True
    status = cli("account", "status", nir).stdout
    assert "PIN set (previous system)" in status
    assert "PIN carried over from the previous system: upgraded at the next successful" in status
    assert json.loads(cli("--json", "account", "status", nir).stdout)["pin_legacy"] is True

    assert login(cli, nir, WRONG)["reason"] == "wrong_pin"
    assert stored_hash(session, nir) == sealed  # only a success upgrades it

    assert login(cli, nir, PIN)["ok"] is True
    upgraded = stored_hash(session, nir)
    assert upgraded is not None and upgraded.startswith("$argon2id$")
    assert legacy not in upgraded

    assert login(cli, nir, PIN)["ok"] is True  # the old PIN still works, on the new hash
    assert stored_hash(session, nir) == upgraded
    assert json.loads(cli("--json", "account", "status", nir).stdout)["pin_legacy"] is False


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unknown PIN hash format"),
        ("5f4dcc3b5aa765d61d8327deb882cf99", "unknown PIN hash format"),  # a bare MD5
        ("$2b$04$tooshort", "malformed bcrypt hash"),
        ("$2b$31$abcdefghijklmnopqrstuu5ZZmGzXsvFxo9sQJ3bTkMfs0IPpAaKm", "bcrypt cost out of"),
        ("$pbkdf2-sha256$10$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "rounds out of the accepted range"),
        ("$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "too costly"),
        # Each a login of seconds, which would tell this member from an unknown NIR.
        ("$argon2id$v=19$m=262144,t=20,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "too costly"),
        (f"$2b$14${bcrypt.gensalt(4).decode()[7:]}" + "a" * 31, "(4 to 13)"),
        ("$pbkdf2-sha256$2000000$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "(1,000 to 1,000,000)"),
    ],
)
def test_unknown_or_unusable_hashes_are_refused_per_row(
    cli: Cli, session: Session, tmp_path: Path, value: str, reason: str
) -> None:
    good = LEGACY["bcrypt-2b"]()
    errors = tmp_path / "rejets.csv"
    result, rows = import_hashes(cli, tmp_path, [good, value], "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["invalid"] == 1
    report = report_rows(errors)
    assert [(r["line"], r["field"], r["nir"]) for r in report] == [
        ("3", "pin_hash", rows[1]["nir"])
    ]
    assert reason in report[0]["reason"]
    assert "pin_hash" not in report[0]  # the report holds no hash, even a refused one
    assert value not in errors.read_text(encoding="utf-8-sig") + result.output
    session.rollback()
    assert [m.nir for m in session.exec(select(Member))] == [rows[0]["nir"]]


@pytest.mark.slow
def test_a_hash_imported_under_the_former_ceilings_still_logs_in(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Imports accept bcrypt up to cost 13 since 3 December; a cost-14 hash stored before
    must not lock its member out."""
    result, rows = import_hashes(cli, tmp_path, [LEGACY["bcrypt-2b"]()])
    assert result.exit_code == 0, result.output
    nir = rows[0]["nir"]
    costly = bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(rounds=14)).decode()
    session.rollback()
    account = session.get(Account, get_member(session, nir).id)
    assert account is not None
    account.pin_hash = "legacy:" + costly  # as an import before 3 December stored it
    session.commit()
    assert login(cli, nir, PIN)["ok"] is True


def test_update_fills_a_missing_pin_but_never_replaces_one(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    first = LEGACY["pbkdf2-phc"]()
    _, rows = import_hashes(cli, tmp_path, [None, first])  # type: ignore[list-item]
    kept = stored_hash(session, rows[1]["nir"])
    assert stored_hash(session, rows[0]["nir"]) is None
    newer = LEGACY["bcrypt-2b"]()
    result, _ = import_hashes(cli, tmp_path, [newer, newer], "--on-conflict", "update")
    assert json.loads(result.stdout)["updated"] == 1
    filled = stored_hash(session, rows[0]["nir"])
    assert filled is not None and filled.startswith("legacy:k1:")  # sealed, as on insert
    assert stored_hash(session, rows[1]["nir"]) == kept
    assert login(cli, rows[0]["nir"], PIN)["ok"] is True


def test_a_re_import_never_brings_back_a_pin_an_agent_reset(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    _, rows = import_hashes(cli, tmp_path, [LEGACY["bcrypt-2b"]()])
    nir = rows[0]["nir"]
    reset = cli("pin", "reset", nir, "--channel", "post", "--reason", "PIN divulgué")
    assert reset.exit_code == 0, reset.output
    again = cli("--json", "members", "import", str(tmp_path / "legacy.csv"),
                "--on-conflict", "update")  # fmt: skip
    assert json.loads(again.stdout)["updated"] == 0
    assert stored_hash(session, nir) is None
    assert login(cli, nir, PIN)["reason"] == "no_pin"


def test_db_upgrade_seals_the_hashes_imports_stored_as_they_came(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Imports before 3 December stored legacy hashes unsealed: a stolen database gave a weak
    bcrypt to a brute force. `db upgrade` seals them with the pepper, audited per member;
    they still log in; one too long to store sealed is left as it is, and still logs in."""
    from cpms_admin.credentials.legacy import fits_sealed
    from tests.audit_helpers import audit_of

    long_hash = PasswordHasher(
        time_cost=1, memory_cost=1024, parallelism=1, salt_len=64, hash_len=64
    ).hash(PIN)
    assert not fits_sealed(long_hash)
    raws = [LEGACY["bcrypt-2b"](), LEGACY["pbkdf2-phc"](), long_hash]
    result, rows = import_hashes(cli, tmp_path, [LEGACY["argon2id"]()] * 3)
    assert result.exit_code == 0, result.output
    nirs = [row["nir"] for row in rows]
    session.rollback()
    for nir, raw in zip(nirs, raws, strict=True):
        account = session.get(Account, get_member(session, nir).id)
        assert account is not None
        account.pin_hash = "legacy:" + raw  # as an import before 3 December stored it
    session.commit()

    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert "Note: sealed 2 imported PIN hashes stored as they came" in upgraded.stderr
    stored = [stored_hash(session, nir) for nir in nirs]
    assert [value.startswith("legacy:k1:") for value in stored if value] == [True, True, False]
    assert all(raw not in value for raw, value in zip(raws[:2], stored, strict=False) if value)
    assert stored[2] == "legacy:" + long_hash
    assert [event["action"] for event in audit_of(cli, nirs[0])][-1] == "pins.seal_imported.member"
    again = cli("db", "upgrade")
    assert again.exit_code == 0 and "sealed" not in again.stderr
    assert [login(cli, nir, PIN)["ok"] for nir in nirs] == [True, True, True]


def test_an_imported_pin_the_rules_refuse_is_never_accepted_and_is_revoked(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The old system allowed PINs anyone with the NIR guesses (the birth date it holds,
    123456). Typed right, such a PIN is answered as a wrong one (an answer of its own would
    tell a member from a stranger) and revoked: the member sets a new PIN with a code."""
    nirs = [person(n)["nir"] for n in (1, 2)]
    weak = [sorted(nir_date_pins(nirs[0]))[0], "123456"]
    hashes = [bcrypt.hashpw(pin.encode(), bcrypt.gensalt(4)).decode() for pin in weak]
    result, _ = import_hashes(cli, tmp_path, hashes)
    assert result.exit_code == 0, result.output
    for nir, pin in zip(nirs, weak, strict=True):
        wrong = cli("portal", "login", nir, input=f"{WRONG}\n")
        right = cli("portal", "login", nir, input=f"{pin}\n")
        assert (right.exit_code, right.stdout) == (wrong.exit_code, wrong.stdout)
        assert stored_hash(session, nir) is None
        assert login(cli, nir, pin)["reason"] == "no_pin"  # revoked: no second chance
    [event] = [
        e
        for e in json.loads(cli("--json", "audit", "list", "--nir", nirs[0]).stdout)
        if e["details"].get("imported_pin_revoked")
    ]
    assert event["details"]["imported_pin_revoked"] == PinWeakness.birth_date
    assert login(cli, person(3)["nir"], PIN)["reason"] == "unknown_member"  # (a stranger's)
