"""The pepper belongs to its database: found beside a SQLite file from any working directory,
checked against the fingerprint the database recorded, never made twice, and rotated without
locking anyone out. Real processes of the command (forked warm: tests/warm_cli.py) where
the working directory matters; both engines."""

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cpms_admin.db import current_revision, make_engine, sqlite_path
from cpms_admin.errors import NotReady
from cpms_admin.models import Account, AuditEvent, SecurityCode, UnknownLogin
from cpms_admin.pepper import write_pepper_file
from cpms_admin.settings import Settings
from tests.cred_helpers import NEW_PIN, PIN, mailed_codes
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, Cli, FakeClock, invoke
from tests.process_helpers import (
    cli_popen,
    cli_run,
    start_held,
    wait_until,
    waiting_for_a_lock,
)


def cpms(*args: str, cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """The command as cron or an agent's shell runs it, a process of its own: only the given
    settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPMS_")}
    return cli_run(
        list(args),
        input=stdin,
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# The member `enrol` adds (with the NIR it makes).
LEA = ["--last-name", "Roux", "--first-name", "Léa", "--email", "lea.roux@example.fr",
       "--street", "3 rue Vauban", "--postcode", "69006", "--city", "Lyon"]  # fmt: skip


def enrol(cwd: Path, env: dict[str, str], mail_dir: Path) -> str:
    """A member with a PIN, set with an e-mailed code, all from `cwd`: the NIR."""
    nir = make_nir()
    added = cpms("member", "add", "--nir", nir, *LEA, "--no-welcome", cwd=cwd, **env)
    assert added.returncode == 0, added.stderr
    sent = cpms("code", "issue", nir, "--channel", "email", "--reason", "x", cwd=cwd, **env)
    assert sent.returncode == 0, sent.stderr
    (code,) = mailed_codes_in(mail_dir)
    done = cpms("portal", "set-pin", nir, cwd=cwd, stdin=f"{code}\n{PIN}\n{PIN}\n", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    return nir


def mailed_codes_in(mail_dir: Path) -> list[str]:
    from cpms_admin.settings import Settings

    return mailed_codes(Settings(mail_dir=str(mail_dir)))


@pytest.mark.slow
def test_a_sqlite_databases_pepper_is_beside_it_whatever_the_working_directory(
    tmp_path: Path,
) -> None:
    """The accident of the issue: `db upgrade` from another folder (as cron runs it) found no
    `data/pepper` there and made a second pepper. Now the pepper is beside the database."""
    home, cron, srv = tmp_path / "agent", tmp_path / "cron", tmp_path / "srv"
    for folder in (home, cron, srv):
        folder.mkdir()
    env = {
        "CPMS_DATABASE_URL": f"sqlite:///{srv / 'cpms.db'}",
        "CPMS_MAIL_DIR": str(tmp_path / "outbox"),
    }
    first = cpms("db", "upgrade", cwd=home, **env)
    assert first.returncode == 0, first.stderr
    assert f"created the pepper file {srv / 'pepper'}" in first.stderr
    assert not (home / "data").exists()
    nir = enrol(home, env, tmp_path / "outbox")
    # Another folder, with a planted data/pepper of its own: neither is used nor made.
    (cron / "data").mkdir()
    (cron / "data" / "pepper").write_text("1:" + "f" * 64 + "\n")
    again = cpms("db", "upgrade", cwd=cron, **env)
    assert (again.returncode, again.stderr) == (0, "")
    assert sorted(p.name for p in srv.iterdir() if "pepper" in p.name) == ["pepper"]
    login = cpms("--json", "portal", "login", nir, cwd=cron, stdin=f"{PIN}\n", **env)
    assert json.loads(login.stdout)["ok"] is True
    doctor = cpms("--json", "doctor", cwd=cron, **env)
    assert doctor.returncode in (0, 5), doctor.stderr  # 5: a check other than the pepper's
    checks = json.loads(doctor.stdout)
    assert next(c for c in checks if c["name"] == "pepper")["ok"] is True


def test_a_lost_pepper_is_never_replaced_and_the_message_names_the_file(tmp_path: Path) -> None:
    """The file beside the database (the working directory's part: the tests above)."""
    cli = Cli(Settings(database_url=f"sqlite:///{tmp_path / 'cpms.db'}", mail_dir=str(tmp_path)))
    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    nir = make_nir()
    added = cli("member", "add", "--nir", nir, *LEA, "--no-welcome")
    assert added.exit_code == 0, added.output
    assert cli("code", "issue", nir, "--channel", "email", "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert cli("portal", "set-pin", nir, input=f"{code}\n{PIN}\n{PIN}\n").exit_code == 0
    pepper = tmp_path / "pepper"
    kept = pepper.read_text()
    pepper.unlink()  # lost: a restore forgot it, or the folder was cleaned
    upgrade = cli("db", "upgrade")
    assert upgrade.exit_code == 5
    assert f"no pepper at {pepper}, but this database recorded a pepper" in upgrade.stderr
    assert not pepper.exists()
    login = cli("portal", "login", nir, input=f"{PIN}\n")
    assert login.exit_code == 5
    assert login.stderr.startswith(f"Error: no pepper: {pepper} does not exist.")
    pepper.write_text(kept)  # restored from the backup, as umask 022 leaves it: 0644
    pepper.chmod(0o644)
    login = cli("portal", "login", nir, input=f"{PIN}\n")
    assert login.exit_code == 5
    assert f"pepper file {pepper} is open to other users (mode 0644)" in login.stderr
    assert login.stderr.rstrip().endswith(f"chmod 640 {pepper}")
    pepper.chmod(0o600)  # as the message says: all is well again
    assert cli("portal", "login", nir, input=f"{PIN}\n").exit_code == 0


def test_a_wrong_pepper_is_refused_by_every_command_that_hashes_and_by_the_doctor(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """On both engines; the pepper named by CPMS_PEPPER_FILE (the file beside a SQLite
    database, found from any working directory: the tests above)."""
    member = make_member(session, welcome=False)
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(TEST_PEPPER + "\n")
    wrong.write_text("wrong\n")
    right.chmod(0o600)
    wrong.chmod(0o600)
    good = cli.with_settings(pepper=None, pepper_file=str(right))
    bad = cli.with_settings(pepper=None, pepper_file=str(wrong))
    sent = good("code", "issue", member.nir, "--reason", "x")
    assert sent.exit_code == 0, sent.output
    for args, stdin in (
        (("portal", "login", member.nir), "605813\n"),
        (("portal", "request-code", member.nir), ""),
        (("portal", "set-pin", member.nir), "123987\n739264\n739264\n"),
        (("code", "issue", member.nir, "--reason", "x"), ""),
        (("pin", "reset", member.nir, "--reason", "x"), ""),
        (("mail", "send"), ""),
        (("doctor",), ""),
    ):
        refused = bad(*args, input=stdin)
        assert refused.exit_code == 5, (args, refused.output)
        assert "is not this database's pepper" in refused.output
    assert bad("--json", "db", "upgrade").exit_code == 5
    session.rollback()
    account = session.get(Account, member.id)
    assert account is not None and account.failed_attempts == 0  # nothing was counted


@pytest.mark.slow
@pytest.mark.skipif("not os.environ.get('CPMS_TEST_DATABASE_URL')")
def test_postgresql_needs_its_pepper_set(cli: Cli, db_url: str, tmp_path: Path) -> None:
    if sqlite_path(db_url) is not None:
        pytest.skip("PostgreSQL's rule")
    env = {**cli.env(), "CPMS_PEPPER": "", "CPMS_PEPPER_FILE": ""}
    for args in (("db", "upgrade"), ("portal", "login", make_nir()), ("doctor",)):
        refused = cpms(*args, cwd=tmp_path, stdin="605813\n", **env)
        assert refused.returncode == 5
        assert "needs CPMS_PEPPER or CPMS_PEPPER_FILE" in refused.stdout + refused.stderr
    assert not (tmp_path / "data").exists()


# --- rotation -----------------------------------------------------------------------------


@pytest.fixture
def filed(cli: Cli, tmp_path: Path) -> tuple[Cli, Path]:
    """The test database's pepper, in a file (rotation writes to it)."""
    path = tmp_path / "pepper"
    path.write_text(f"{TEST_PEPPER}\n")
    path.chmod(0o600)
    return cli.with_settings(pepper=None, pepper_file=str(path)), path


def status(cli: Cli) -> list[dict[str, Any]]:
    result = cli("--json", "pepper", "status")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_rotation_locks_nobody_out_and_says_when_the_old_pepper_can_go(
    filed: tuple[Cli, Path], session: Session
) -> None:
    cli, path = filed
    member = make_member(session, welcome=False)
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    rotated = cli("--json", "pepper", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["pepper"] == 2
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["1", "2"]
    assert lines[0] == f"1:{TEST_PEPPER}" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert [(r["pepper"], r["current"], r["live_codes"]) for r in status(cli)] == [
        (1, False, 1),
        (2, True, 0),
    ]
    # The code made before the rotation still works; the PIN set with it uses pepper 2.
    done = cli("portal", "set-pin", member.nir, input=f"{code}\n{PIN}\n{PIN}\n")
    assert done.exit_code == 0, done.output
    session.rollback()
    account = session.get(Account, member.id)
    assert account is not None and (account.pin_hash or "").startswith("k2:$argon2id$")
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    # No PIN hash or code needs pepper 1 now, but the audit events its key sealed do.
    old = status(cli)[0]
    assert (old["pin_hashes"], old["live_codes"], old["removable"]) == (0, 0, False)
    assert old["audit_events"] > 0
    assert cli("audit", "verify").exit_code == 0  # events sealed with either key
    path.write_text(lines[1] + "\n")  # the old pepper's line deleted all the same
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    unchecked = cli("audit", "verify")  # ... its events can no longer be checked
    assert unchecked.exit_code == 5
    assert "sealed with pepper 1, which the pepper file no longer holds" in unchecked.stderr
    doctor = cli("--json", "doctor")  # and the doctor says so, with the fix
    assert doctor.exit_code == 5
    (pepper,) = [check for check in json.loads(doctor.stdout) if check["name"] == "pepper"]
    assert pepper["detail"] == (
        f"pepper file {path} no longer holds pepper 1 (still keying 0 PIN hashes, 0 live codes, "
        f"{old['audit_events']} audit events, 0 unknown NIRs' counters): a PIN, code or audit "
        "event made with it cannot be checked, and unknown NIRs' counters made with it start "
        "afresh"
    )
    assert pepper["fix"] == "put its line back, from the backup of the pepper file"
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "pepper.rotate")).all()
    assert [json.loads(e.details)["pepper"] for e in events] == [2]
    assert [e.key_id for e in events] == [2]  # the rotation's event: the new key's first


def portal_answers(cli: Cli, *nirs: str) -> list[tuple[Any, ...]]:
    """A wrong PIN's answer for each NIR, as the member reads it (the reason is internal)."""
    found = []
    for nir in nirs:
        result = cli("--json", "portal", "login", nir, "--captcha-ok", input="700001\n")
        answer = json.loads(result.stdout)
        keys = ("message", "remaining_attempts", "retry_after_seconds", "captcha_required")
        found.append((result.exit_code, *(answer[key] for key in keys)))
    return found


def test_a_rotation_unlocks_no_unknown_nir_a_member_would_stay_locked_as(
    filed: tuple[Cli, Path], session: Session, clock: FakeClock
) -> None:
    """An unknown NIR's counters are keyed with the pepper: a rotation started them afresh
    while a member's stayed, so whoever had locked both could tell the member after it."""
    cli, _ = filed
    member, stranger = make_member(session, welcome=False).nir, make_nir()
    for _ in range(10):  # to the hard lock, a cool-down apart
        clock.advance(hours=2)
        portal_answers(cli, member, stranger)
    locked = portal_answers(cli, member, stranger)
    assert locked[0] == locked[1] and locked[0][1].startswith("Votre accès est bloqué")
    assert cli("pepper", "rotate").exit_code == 0
    assert portal_answers(cli, member, stranger) == locked
    # The stranger's counters still need pepper 1, which says so.
    assert [(r["pepper"], r["unknown_nir_counters"], r["removable"]) for r in status(cli)] == [
        (1, 1, False),
        (2, 0, False),
    ]


def test_counters_made_under_an_older_pepper_go_on_under_the_current_one(
    filed: tuple[Cli, Path], session: Session
) -> None:
    """Two wrong PINs before a rotation, one after: the third brings the cool-down, for a
    stranger as for a member, and the stranger's counters move to the new pepper."""
    cli, _ = filed
    member, stranger = make_member(session, welcome=False).nir, make_nir()
    portal_answers(cli, member, stranger)
    portal_answers(cli, member, stranger)
    assert cli("pepper", "rotate").exit_code == 0
    third = portal_answers(cli, member, stranger)
    assert third[0] == third[1] and "patienter 1 minute" in third[0][1]
    session.rollback()
    rows = session.exec(select(UnknownLogin)).all()
    assert [(row.subject[:3], row.failed_attempts) for row in rows] == [("k2$", 3)]
    assert [r["unknown_nir_counters"] for r in status(cli)] == [0, 1]


def test_counters_an_old_pepper_and_the_current_one_both_hold_add_up(
    filed: tuple[Cli, Path], session: Session
) -> None:
    """A stranger tried while pepper 1's line was missing from the file got a fresh row
    under pepper 2: once the line is back, both rows' failures count, as a member's would."""
    cli, path = filed
    member, stranger = make_member(session, welcome=False).nir, make_nir()
    portal_answers(cli, member, stranger)
    assert cli("pepper", "rotate").exit_code == 0
    lines = path.read_text()
    path.write_text(lines.splitlines()[1] + "\n")  # pepper 1's line lost for a while
    portal_answers(cli, member, stranger)
    path.write_text(lines)  # and put back from the backup
    third = portal_answers(cli, member, stranger)
    assert third[0] == third[1] and "patienter 1 minute" in third[0][1]
    session.rollback()
    rows = session.exec(select(UnknownLogin)).all()
    assert [(row.subject[:3], row.failed_attempts) for row in rows] == [("k2$", 3)]


@pytest.mark.parametrize(("before", "after"), [(0o600, 0o600), (0o640, 0o640), (0o440, 0o640)])
def test_a_rotation_keeps_the_group_that_shares_the_pepper(
    filed: tuple[Cli, Path], before: int, after: int
) -> None:
    """Agents sharing a SQLite database read the pepper through its group (README, Agents and
    rights): a rotation keeps the file's group and its read (a read-only copy gets its
    owner's write back)."""
    cli, path = filed
    path.chmod(before)
    group = path.stat().st_gid
    assert cli("pepper", "rotate").exit_code == 0
    assert (path.stat().st_mode & 0o777, path.stat().st_gid) == (after, group)
    assert cli("--json", "doctor").exit_code == 0


def test_an_imported_hash_sealed_with_a_pepper_keeps_it_needed(
    filed: tuple[Cli, Path], tmp_path: Path
) -> None:
    """An imported (legacy) PIN hash is sealed with the pepper that was current: `pepper
    status` counts it, so that pepper's line is not deleted while the hash still needs it;
    after a rotation the member still logs in, and is moved to the new pepper."""
    import bcrypt

    cli, _ = filed
    nir = make_nir()
    legacy = bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(rounds=4)).decode()
    source = tmp_path / "legacy.csv"
    source.write_text(
        "nir,last_name,first_name,street,postcode,city,pin_hash\n"
        f"{nir},Roux,Léa,1 rue de la Paix,75002,Paris,{legacy}\n"
    )
    assert cli("members", "import", str(source)).exit_code == 0
    assert cli("pepper", "rotate").exit_code == 0
    assert [(r["pepper"], r["pin_hashes"]) for r in status(cli)] == [(1, 1), (2, 0)]
    assert cli("portal", "login", nir, input=f"{PIN}\n").exit_code == 0
    assert [(r["pepper"], r["pin_hashes"]) for r in status(cli)] == [(1, 0), (2, 1)]


def test_an_old_pin_hash_is_rehashed_at_the_next_login(
    filed: tuple[Cli, Path], session: Session
) -> None:
    cli, _ = filed
    member = make_member(session, welcome=False)
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    cli("portal", "set-pin", member.nir, input=f"{code}\n{PIN}\n{PIN}\n")
    assert cli("pepper", "rotate").exit_code == 0
    assert [r["pin_hashes"] for r in status(cli)] == [1, 0]
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    assert [r["pin_hashes"] for r in status(cli)] == [0, 1]
    wrong = cli("--json", "portal", "login", member.nir, input=f"{NEW_PIN}\n")
    assert json.loads(wrong.stdout)["reason"] == "wrong_pin"


def test_an_interrupted_rotation_locks_nobody_out_and_is_finished_by_running_it_again(
    filed: tuple[Cli, Path], session: Session
) -> None:
    """Its pepper is written, not recorded: as during every rotation, between the two. The
    commands refused it (exit 5): logins and the nightly jobs failed while a rotation ran.
    They now use the peppers before it, and `doctor` says to finish it."""
    cli, path = filed
    member = make_member(session, welcome=False)
    path.write_text(path.read_text() + "2:" + "a" * 64 + "\n")  # written, never recorded
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    session.rollback()
    (made,) = session.exec(select(SecurityCode.code_hash)).all()
    assert not made.startswith("k2$")  # made with pepper 1, the recorded one
    doctor = json.loads(cli("--json", "doctor").stdout)
    (pepper,) = [check for check in doctor if check["name"] == "pepper"]
    assert (pepper["ok"], pepper["detail"]) == (
        False,
        f"pepper file {path} holds pepper 2, not recorded yet: a pepper rotate is running, or "
        "was interrupted (the commands use the peppers before it)",
    )
    listed = cli("pepper", "status")
    assert listed.exit_code == 0
    assert listed.stderr == (
        f"Warning: pepper file {path} holds pepper 2, not recorded yet: a pepper rotate is "
        "running, or was interrupted (the commands use the peppers before it): run cpms-admin "
        "pepper rotate again once no rotation runs: it finishes the one interrupted\n"
    )
    finished = cli("--json", "pepper", "rotate")
    assert json.loads(finished.stdout) == {
        "pepper": 2,
        "file": str(path),
        "finished_interrupted": True,
    }
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0


def test_while_a_rotation_runs_members_log_in_and_a_second_rotation_is_refused(
    filed: tuple[Cli, Path], session: Session, tmp_path: Path
) -> None:
    """Held between writing its pepper and recording it: a login there was refused (exit 5),
    and on PostgreSQL a second rotation, reading the file as it was, wrote the same id over
    the first's pepper once recorded: every hash made with it lost."""
    cli, path = filed
    member = make_member(session, welcome=False)
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert cli("portal", "set-pin", member.nir, input=f"{code}\n{PIN}\n{PIN}\n").exit_code == 0
    held_here = tmp_path / "held"
    first = start_held(
        ["--json", "pepper", "rotate"],
        env={**os.environ, **cli.env()},
        point="pepper.written",
        flag=held_here,
    )
    try:
        login = cli("--json", "portal", "login", member.nir, input=f"{PIN}\n")
        second = cli("pepper", "rotate")
    finally:
        held_here.unlink(missing_ok=True)
        out, err = first.communicate(timeout=120)
    assert login.exit_code == 0, login.output
    assert (second.exit_code, second.stderr) == (4, "Error: another pepper rotate is running\n")
    assert first.returncode == 0, err
    assert json.loads(out)["pepper"] == 2
    assert [line.split(":")[0] for line in path.read_text().splitlines()] == ["1", "2"]
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    assert cli("doctor").exit_code == 0


def test_a_command_that_waited_for_the_audit_chain_while_a_rotation_committed_goes_on(
    filed: tuple[Cli, Path], session: Session, engine: Engine, tmp_path: Path
) -> None:
    """PostgreSQL: a command read the peppers while the rotation's was written and not yet
    recorded (so without it), then waited for the chain's head, which the rotation held. It
    found the head sealed with a pepper it did not know, and said the chain was tampered with."""
    if engine.dialect.name != "postgresql":
        pytest.skip(
            "SQLite's BEGIN IMMEDIATE holds the write lock from before the peppers are read"
        )
    cli, _ = filed
    member = make_member(session, welcome=False)
    session.commit()
    held_here = tmp_path / "held"
    env = {**os.environ, **cli.env()}
    rotation = start_held(["pepper", "rotate"], env=env, point="audit.sealed", flag=held_here)
    try:
        update = cli_popen(
            ["member", "update", member.nir, "--first-name", "Zoé"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: waiting_for_a_lock(session), what="the update waiting for the head")
    finally:
        held_here.unlink(missing_ok=True)
        rotated = rotation.communicate(timeout=120)
    assert rotation.returncode == 0, rotated[1]
    _, err = update.communicate(timeout=120)
    assert update.returncode == 0, err
    verified = cli("--json", "audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_rotation_needs_a_file_and_the_databases_own_pepper(cli: Cli, tmp_path: Path) -> None:
    from_env = cli("pepper", "rotate")
    assert from_env.exit_code == 5 and "needs the peppers in a file" in from_env.stderr
    other = tmp_path / "other"
    other.write_text("another\n")
    other.chmod(0o600)
    wrong = cli.with_settings(pepper=None, pepper_file=str(other))("pepper", "rotate")
    assert wrong.exit_code == 5 and "not this database's pepper" in wrong.stderr
    assert other.read_text() == "another\n"


@pytest.mark.slow
def test_a_pepper_others_could_read_or_plant_is_never_adopted(tmp_path: Path) -> None:
    """A database made in a shared directory (/var/tmp) where another user left a `pepper`
    everyone can read: `db upgrade` refuses it (exit 5, the fix named) instead of recording
    a secret someone else knows; nothing is recorded, and once fixed all is well."""
    planted = tmp_path / "pepper"
    planted.write_text("1:malloryknowsthis\n")
    planted.chmod(0o644)
    env = {"CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}", "CPMS_AGENT": "bob"}
    upgrade = cpms("db", "upgrade", cwd=tmp_path, **env)
    assert upgrade.returncode == 5
    assert upgrade.stderr == (
        f"Error: pepper file {planted} is open to other users (mode 0644): chmod 640 {planted}\n"
    )
    planted.chmod(0o660)  # its group may write it: refused as well
    assert "open to its group beyond reading" in cpms("db", "upgrade", cwd=tmp_path, **env).stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_private_pepper_another_user_made_is_never_adopted(tmp_path: Path) -> None:
    """Another user's 0600 `pepper` in a shared directory: root reads it all the same, so the
    mode proves nothing; the owner does. Refused (exit 5), nothing recorded."""
    planted = tmp_path / "pepper"
    planted.write_text("1:malloryknowsthis\n")
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)  # nobody
    env = {"CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}", "CPMS_AGENT": "root"}
    upgrade = cpms("db", "upgrade", cwd=tmp_path, **env)
    assert (upgrade.returncode, upgrade.stderr) == (
        5,
        f"Error: pepper file {planted} belongs to another user (uid 65534) and is not shared "
        "with your group: if it is this database's, run the command as its owner (uid 65534) "
        "or share it with your group (mode 0640); if not, restore the database's own pepper "
        "file there from its backup\n",
    )


@pytest.mark.slow
def test_a_pepper_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Not waited on for ever: a cron job would hang every night after."""
    pepper = tmp_path / "pepper"
    os.mkfifo(pepper, 0o600)
    env = {"CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}", "CPMS_AGENT": "bob"}
    upgrade = cpms("db", "upgrade", cwd=tmp_path, **env)
    assert (upgrade.returncode, upgrade.stderr) == (
        5,
        f"Error: pepper file {pepper} is not a regular file: restore it from its backup\n",
    )


def test_a_rotation_writes_through_a_link_to_the_pepper(filed: tuple[Cli, Path]) -> None:
    """An administrator's link (to where backups look): the link stays, its target gets the
    new pepper, so the backed-up file is the one in use."""
    cli, path = filed
    target = path.with_name("kept-pepper")
    path.rename(target)
    path.symlink_to(target)
    assert cli("pepper", "rotate").exit_code == 0
    assert path.is_symlink() and path.resolve() == target
    assert [line.split(":")[0] for line in target.read_text().splitlines()] == ["1", "2"]
    assert cli("--json", "doctor").exit_code == 0


@pytest.mark.slow
def test_a_pepper_file_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """`db upgrade` making a new database's pepper where no directory can be (a path through
    a file): exit 5 and one line, nothing recorded; then made where it can be."""
    blocker = tmp_path / "etc"
    blocker.write_text("a file, not a directory")
    pepper = blocker / "cpms" / "pepper"
    env = {
        "CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}",
        "CPMS_AGENT": "bob",
        "CPMS_PEPPER_FILE": str(pepper),
    }
    upgrade = cpms("db", "upgrade", "--create-dirs", cwd=tmp_path, **env)
    assert upgrade.returncode == 5
    assert upgrade.stderr.startswith(f"Error: cannot write pepper file {pepper}: ")
    assert upgrade.stderr.endswith("; nothing was changed\n") and upgrade.stderr.count("\n") == 1
    blocker.unlink()
    assert cpms("db", "upgrade", "--create-dirs", cwd=tmp_path, **env).returncode == 0
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600


def schema_made(url: str) -> bool:
    """Whether anything of the database was made: its SQLite file, or a migrated schema."""
    database = sqlite_path(url)
    if database is not None:
        return database.exists()
    engine = make_engine(url)
    try:
        return current_revision(engine) is not None
    finally:
        engine.dispose()


@pytest.mark.parametrize("given_in", ["environment", "config file"])
def test_a_new_pepper_in_a_folder_that_does_not_exist_is_refused(
    empty_db_url: str, tmp_path: Path, given_in: str
) -> None:
    """A typo in CPMS_PEPPER_FILE's folder (`cmps` for `cpms`) on a new database: `db upgrade`
    refuses as it does a SQLite file's missing folder, naming the folder and the setting,
    and makes nothing (no folder, no pepper, no schema); with the right path it works."""
    typo, right = tmp_path / "etc" / "cmps" / "pepper", tmp_path / "etc" / "cpms" / "pepper"
    right.parent.mkdir(parents=True)  # the operator's folder, empty
    config = tmp_path / "cpms.toml"
    cli = Cli(Settings(database_url=empty_db_url, mail_dir=str(tmp_path / "outbox")))

    def upgrade(pepper: Path) -> Any:
        if given_in == "environment":
            return cli.with_settings(pepper_file=str(pepper))("db", "upgrade")
        config.write_text(f'pepper_file = "{pepper}"\n')
        return invoke(["db", "upgrade"], env={**cli.env(), "CPMS_CONFIG": str(config)})

    setting = "CPMS_PEPPER_FILE" if given_in == "environment" else f"pepper_file in {config}"
    refused = upgrade(typo)
    assert (refused.exit_code, refused.stderr) == (
        5,
        f"Error: folder {typo.parent} does not exist: check {setting}, or run cpms-admin db "
        "upgrade --create-dirs\n",
    )
    assert not typo.parent.exists() and not schema_made(empty_db_url)
    done = upgrade(right)
    assert done.exit_code == 0, done.output
    assert "upgraded from empty" in done.stdout
    assert f"created the pepper file {right} (mode 0600)" in done.stderr
    assert stat.S_IMODE(right.stat().st_mode) == 0o600
    assert not typo.parent.exists()


def test_create_dirs_makes_the_pepper_files_folder(empty_db_url: str, tmp_path: Path) -> None:
    pepper = tmp_path / "etc" / "cpms" / "pepper"
    cli = Cli(Settings(database_url=empty_db_url, pepper_file=str(pepper)))
    done = cli("db", "upgrade", "--create-dirs")
    assert done.exit_code == 0, done.output
    assert f"created the pepper file {pepper} (mode 0600)" in done.stderr
    assert stat.S_IMODE(pepper.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600
    assert cli("pepper", "status").exit_code == 0


def test_a_missing_folder_never_gets_a_second_pepper(cli: Cli, tmp_path: Path) -> None:
    """A database that has a pepper: the typo is refused as a missing pepper, `--create-dirs`
    or not (restore it, or fix the path), and no folder is made."""
    typo = tmp_path / "etc" / "cmps" / "pepper"
    mistyped = cli.with_settings(pepper=None, pepper_file=str(typo))
    for args in (("db", "upgrade"), ("db", "upgrade", "--create-dirs")):
        refused = mistyped(*args)
        assert refused.exit_code == 5
        assert f"no pepper at {typo}, but this database recorded a pepper" in refused.stderr
    assert not typo.parent.parent.exists()


def test_a_pepper_rewritten_never_makes_its_folder(tmp_path: Path) -> None:
    """`pepper rotate` rewrites a file it has just read; were its folder gone meanwhile,
    the write fails (exit 5), no folder is made."""
    gone = tmp_path / "gone" / "pepper"
    with pytest.raises(NotReady, match=f"cannot write pepper file {gone}: No such file"):
        write_pepper_file(gone, {1: "a" * 64, 2: "b" * 64})
    assert not gone.parent.exists()


@pytest.mark.slow
def test_the_outbox_is_beside_the_database_whatever_the_working_directory(
    tmp_path: Path,
) -> None:
    """As the pepper: with CPMS_MAIL_DIR unset, a code e-mail sent from another directory
    (cron's /) lands in `outbox` beside the database, where `purge` and `doctor` look, not in
    a `data/outbox` made wherever the command ran."""
    srv, cron = tmp_path / "srv", tmp_path / "cron"
    srv.mkdir()
    cron.mkdir()
    env = {"CPMS_DATABASE_URL": f"sqlite:///{srv / 'cpms.db'}", "CPMS_AGENT": "cron"}
    assert cpms("db", "upgrade", cwd=cron, **env).returncode == 0
    enrol(cron, env, srv / "outbox")  # the code is read from there
    assert not (cron / "data").exists()
    doctor = cpms("doctor", cwd=tmp_path, **env)
    assert f"e-mails are written to {srv / 'outbox'}/" in doctor.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a link away")
def test_a_rotation_never_writes_through_another_user_s_link(filed: tuple[Cli, Path]) -> None:
    """In a folder a group shares, another agent could point the link elsewhere: refused."""
    cli, path = filed
    target = path.with_name("kept-pepper")
    path.rename(target)
    before = target.read_text()
    path.symlink_to(target)
    os.lchown(path, 65534, 65534)
    result = cli("pepper", "rotate")
    assert result.exit_code == 5
    assert "is a link another user made (uid 65534)" in result.stderr
    assert target.read_text() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a link away")
def test_a_link_another_user_planted_as_the_pepper_is_never_adopted(tmp_path: Path) -> None:
    """In a shared folder (/var/tmp), another user links `pepper` to the pepper of one of our
    databases: followed, two databases would share a pepper, and they could re-point it at
    will. Refused as a planted file is, and `doctor` says why."""
    ours, shared = tmp_path / "ours", tmp_path / "shared"
    ours.mkdir()
    shared.mkdir()
    shared.chmod(0o1777)
    assert (
        Cli(Settings(database_url=f"sqlite:///{ours / 'cpms.db'}"))("db", "upgrade").exit_code == 0
    )
    planted = shared / "pepper"
    planted.symlink_to(ours / "pepper")
    os.lchown(planted, 65534, 65534)
    theirs = Cli(Settings(database_url=f"sqlite:///{shared / 'cpms.db'}", mail_dir=str(shared)))
    said = f"pepper file {planted} is a link another user made (uid 65534)"
    upgrade = theirs("db", "upgrade")
    assert (upgrade.exit_code, said in upgrade.stderr) == (5, True), upgrade.output
    assert sorted(entry.name for entry in shared.iterdir()) == ["pepper"]  # no database made
    doctor = theirs("doctor")
    assert (doctor.exit_code, said in doctor.output) == (5, True), doctor.output


def test_only_a_missing_table_sends_the_agent_to_db_upgrade(tmp_path: Path) -> None:
    """Reading the fingerprints fails for many reasons (a file that is no database, a right
    refused): `db upgrade` only helps the database that lacks the table."""
    not_a_database = tmp_path / "cpms.db"
    not_a_database.write_bytes(b"a spreadsheet saved under the wrong name" * 100)
    result = invoke(["pepper", "status"], env={
        "CPMS_DATABASE_URL": f"sqlite:///{not_a_database}", "CPMS_PEPPER": TEST_PEPPER,
        "CPMS_CONFIG": None, "CPMS_AGENT": "agent.test"})  # fmt: skip
    assert (result.exit_code, result.stderr) == (
        5,
        "Error: cannot read the database's pepper fingerprints: file is not a database\n",
    )
