"""No PIN or code in clear anywhere but the e-mail that carries it: not in the database file,
the audit log, the logs, nor any command's output. And the pepper really keys the hashes."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from cpms_admin.db import sqlite_path
from tests.cred_helpers import LEGACY, PIN, import_hashes, innocent_digits_masked, mailed_codes
from tests.factories import make_member, make_nir, member_values, snapshot
from tests.harness import Cli
from tests.import_helpers import write_csv
from tests.letters_helpers import codes_in_file

PINS = ["482915", "739264", "518372", "627183"]
WRONG_PIN, WRONG_CODE = "605813", "914630"


def run(cli: Cli, outputs: list[str], *args: str, input: str | None = None, code: int = 0) -> Any:
    result = cli(*args, input=input)
    outputs.append(result.output + result.stderr)
    assert result.exit_code == code, result.output
    return result


def full_flow(cli: Cli, nir: str, outputs: list[str]) -> list[str]:
    """Enrolment, first login by e-mailed code, failures, reset, change, lost PIN: the codes."""
    values = member_values(nir=nir)
    run(
        cli,
        outputs,
        "--json",
        "member",
        "add",
        "--nir",
        nir,
        "--last-name",
        values["last_name"],
        "--first-name",
        values["first_name"],
        "--email",
        values["email"],
        "--street",
        values["street"],
        "--postcode",
        values["postcode"],
        "--city",
        values["city"],
    )
    codes: list[str] = []

    def new_code(*args: str) -> str:
        run(cli, outputs, *args)
        codes.append(mailed_codes(cli.settings)[-1])
        return codes[-1]

    def set_pin(secret: str, pin: str, *options: str, code: int = 0, human: bool = False) -> None:
        json_flag = [] if human else ["--json"]
        run(
            cli,
            outputs,
            *json_flag,
            "portal",
            "set-pin",
            nir,
            *options,
            input=f"{secret}\n{pin}\n{pin}\n",
            code=code,
        )

    first = new_code("--json", "code", "issue", nir, "--channel", "email", "--reason", "enrol")
    set_pin(first, PINS[0])
    run(cli, outputs, "--json", "portal", "login", nir, input=f"{PINS[0]}\n")
    run(cli, outputs, "portal", "login", nir, input=f"{WRONG_PIN}\n", code=1)
    run(cli, outputs, "--json", "portal", "login", nir, input=f"{WRONG_PIN}\n", code=1)
    reset = new_code("--json", "pin", "reset", nir, "--reason", "forgot")
    # Wrong codes spend the budget the wrong PINs began: start it again, so none is locked.
    run(cli, outputs, "account", "unlock", nir, "--reason", "called back")
    set_pin(WRONG_CODE, PINS[1], code=1)
    set_pin(WRONG_CODE, PINS[1], code=1, human=True)
    set_pin(reset, PINS[1])
    set_pin(PINS[1], PINS[2], "--with", "pin")
    lost = new_code("portal", "request-code", nir)
    set_pin(lost, PINS[3], human=True)
    run(cli, outputs, "portal", "login", nir, input=f"{PINS[3]}\n")
    run(cli, outputs, "portal", "accept-terms", nir, input=f"{PINS[3]}\n")
    for command in (["account", "status", nir], ["member", "show", nir], ["audit", "list"]):
        run(cli, outputs, *command)
        run(cli, outputs, "--json", *command)
    return codes


def test_no_secret_in_clear_anywhere(
    cli: Cli, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # every statement, parameter and row
    nir = make_nir()
    outputs: list[str] = []
    codes = full_flow(cli, nir, outputs)
    assert len(set(codes)) == 3
    audit_rows = json.loads(cli("--json", "audit", "list", "--limit", "1000").stdout)
    assert {"portal.set_pin", "portal.change_pin", "pin.reset", "code.issue"} <= {
        row["action"] for row in audit_rows
    }
    tables = snapshot(session)
    texts = {
        "outputs": "\n".join(outputs),
        "logs": caplog.text + "\n".join(str(r.args) for r in caplog.records),
        "audit": json.dumps(audit_rows),
        "tables": repr(tables),
    }
    assert "SELECT" in texts["logs"]  # the statements really were logged
    haystacks = {name: text.encode() for name, text in texts.items()}
    db_file = sqlite_path(cli.settings.database_url)
    if db_file is not None:
        for path in (db_file, db_file.with_name(db_file.name + "-wal")):
            if path.exists():
                haystacks[path.name] = path.read_bytes()
    for name, searched in innocent_digits_masked(haystacks, tables).items():
        for secret in [*PINS, WRONG_PIN, WRONG_CODE, *codes]:
            assert secret.encode() not in searched, f"a secret appears in {name}"
    # The e-mails are the one place a code exists in clear.
    assert mailed_codes(cli.settings) == codes
    assert all(Path(cli.settings.mail_dir).iterdir())


def test_a_different_pepper_makes_stored_pins_and_codes_fail(cli: Cli) -> None:
    nir, outputs = make_nir(), []
    full_flow(cli, nir, outputs)
    assert cli("portal", "login", nir, input=f"{PINS[3]}\n").exit_code == 0
    other = cli.with_settings(pepper="another-pepper")
    # Another pepper is not this database's: refused before any hash is made or checked,
    # rather than counting the member's right PIN as a failure.
    refused = other("--json", "portal", "login", nir, input=f"{PINS[3]}\n")
    assert refused.exit_code == 5 and json.loads(refused.stdout)["exit_code"] == 5
    assert "is not this database's pepper" in refused.stderr
    assert "another-pepper" not in refused.stderr + refused.stdout
    assert other("code", "issue", nir, "--channel", "email").exit_code == 5
    # An export seals its event after writing: refused before the first member leaves.
    exported = other("members", "export", "--format", "jsonl")
    assert (exported.exit_code, exported.stdout) == (5, "")
    assert cli("code", "issue", nir, "--channel", "email").exit_code == 0
    code = mailed_codes(cli.settings)[-1]
    with_code = other("--json", "portal", "set-pin", nir, input=f"{code}\n{PINS[0]}\n{PINS[0]}\n")
    assert with_code.exit_code == 5
    # Back on the right pepper, nothing was counted: the PIN works without a CAPTCHA.
    assert cli("portal", "login", nir, input=f"{PINS[3]}\n").exit_code == 0


def test_codes_made_by_the_nightly_jobs_stay_in_their_letter_or_e_mail(
    cli: Cli, session: Session, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """`mail send` and `letters batch` make codes themselves: none reaches their output, the
    logs, the audit log, the database file, the manifest or the index."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    make_member(session, welcome=False)  # its code goes by e-mail
    by_post = [make_member(session) for _ in range(3)]  # each with its enrolment letter
    outputs: list[str] = []
    campaign = ("code", "campaign", "--no-pin", "--channel", "email", "--reason", "migration")
    run(cli, outputs, "--json", *campaign)
    run(cli, outputs, "--json", "mail", "send")
    run(cli, outputs, "mail", "send")
    out = tmp_path / "print"
    run(cli, outputs, "--json", "letters", "batch", "--out", str(out))
    (batch,) = out.iterdir()
    printed = [code for pdf in batch.glob("*.pdf") for code in codes_in_file(pdf).values()]
    codes = [*mailed_codes(cli.settings), *printed]
    assert len(codes) == 1 + len(by_post)
    run(cli, outputs, "letters", "list")
    tables = snapshot(session)
    haystacks = {
        "outputs": "\n".join(outputs).encode(),
        "logs": (caplog.text + "\n".join(str(r.args) for r in caplog.records)).encode(),
        "audit": cli("--json", "audit", "list", "--limit", "1000").stdout.encode(),
        "tables": repr(tables).encode(),
        "manifest.json": (batch / "manifest.json").read_bytes(),
        "index.csv": (batch / "index.csv").read_bytes(),
    }
    db_file = sqlite_path(cli.settings.database_url)
    if db_file is not None:
        for path in (db_file, db_file.with_name(db_file.name + "-wal")):
            if path.exists():
                haystacks[path.name] = path.read_bytes()
    # The bulk runs' events for each member are among those searched.
    assert {"code.campaign.member", "mail.send.member"} <= {
        event["action"] for event in json.loads(haystacks["audit"])
    }
    for name, searched in innocent_digits_masked(haystacks, tables).items():
        for code in codes:
            assert code.encode() not in searched, f"a code appears in {name}"


def test_the_leak_search_masks_the_digits_of_times_and_digests_never_a_code() -> None:
    """The leak tests mask the 6-digit runs a run writes without a secret (a random code
    matches one now and then); a code written in clear beside them is still found, even
    glued to a digest in the database file."""
    code, nir = "872505", "185057872505442"  # a NIR holds 6-digit runs of its own
    digest = f"97155fff969e70fd5e2403487b17ff{code}dc4d6".ljust(64, "a")  # a SHA-256's size
    salt = "8f44869a872505c3"
    tables: dict[str, list[tuple[object, ...]]] = {"member": [(1, nir, "75012")]}
    logged = f"INSERT ... ('{digest}', '{salt}${digest}')"  # how the logs show them
    innocent = (
        "datetime.datetime(2026, 12, 6, 2, 39, 19, 872505, tzinfo=datetime.timezone.utc)",
        "'2026-12-06 02:39:19.872505'",
        "<psycopg.Connection at 0x7f6bf3872505>",
        "[generated in 0.872505s]",
        "batch-12-20261206-872505",
        "{'lock': -7010310872505424399}",
        nir,
        f"sealed\x00{digest}2026-12-06",  # the database file: values glued together
        f"{salt}{digest}",
    )
    in_clear = (
        f"code {code}",
        f'{{"code": "{code}"}}',
        f"02:39:19.000000{code}",
        f"{nir}{code}",
        f"75012{code}",
        f"{digest}{code}",
        f"{code}{digest}",
        f"{digest}{code}{salt}",
    )
    texts = {f"innocent {n}": t for n, t in enumerate(innocent)}
    texts |= {f"in clear {n}": t for n, t in enumerate(in_clear)} | {"logs": logged}
    masked = innocent_digits_masked({n: t.encode() for n, t in texts.items()}, tables)
    for name, text in texts.items():
        found = code.encode() in masked[name]
        assert found == name.startswith("in clear"), (name, text)


def test_an_import_of_pin_hashes_audits_each_member_without_pin_or_hash(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """PIN hashes carried over by an import stay in the accounts: no event of the run, nor
    any of its members, holds one (nor the PIN they were made from)."""
    hashes = [make() for make in LEGACY.values()]
    result, rows = import_hashes(cli, tmp_path, hashes)
    assert result.exit_code == 0, result.output
    events = json.loads(cli("--json", "audit", "list", "--limit", "1000").stdout)
    per_member = [e for e in events if e["action"] == "members.import.member"]
    assert sorted(e["nir"] for e in per_member) == sorted(row["nir"] for row in rows)
    haystack = json.dumps(events) + repr(snapshot(session)["audit_event"])
    for row in rows:
        haystack = haystack.replace(row["nir"], "<nir>")
    for secret in [PIN, *hashes, *(value.rsplit("$", 1)[-1] for value in hashes)]:
        assert secret not in haystack, "a PIN or a PIN hash appears in the audit log"


def test_a_pin_hash_on_a_row_judged_with_the_member_never_shows(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A row from a file without `country` is held and judged last with its PIN hash: in
    no mode does the hash reach the output, the `--errors` report or a log line."""
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    member = make_member(session, nir=make_nir(), country="BE", **brussels)
    secret = LEGACY["bcrypt-2b"]()
    columns = ("nir", "last_name", "first_name", "street", "postcode", "city", "pin_hash")
    rows = [
        {**member_values(nir=member.nir), **brussels, "postcode": "99", "pin_hash": secret},
        {**member_values(nir=make_nir()), **brussels, "pin_hash": secret},  # new: French
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=columns)
    errors = tmp_path / "errors.csv"
    for mode in ("update", "skip", "fail"):
        for dry_run in ((), ("--dry-run",)):
            command = ("members", "import", str(path), "--on-conflict", mode, *dry_run)
            result = cli("--json", *command, "--errors", str(errors))
            assert result.exit_code in (1, 4), result.output
            # exit 4 (a member already there): no report, not even the previous mode's
            assert errors.exists() == (result.exit_code == 1)
            report = errors.read_text(encoding="utf-8-sig") if errors.exists() else ""
            for text in (result.stdout, result.stderr, report):
                assert secret not in text and secret.rsplit("$", 1)[-1] not in text
