"""`doctor` tells what the nightly job lacks, and how to fix it."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.file_helpers import NOBODY
from tests.harness import TEST_PEPPER, Cli, invoke
from tests.process_helpers import CPMS


def checks(result: object) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in json.loads(result.stdout)}  # type: ignore[attr-defined]


def test_everything_in_place_is_exit_0(cli: Cli) -> None:
    result = cli("--json", "doctor")
    assert result.exit_code == 0, result.output
    found = checks(result)
    assert all(row["ok"] for row in found.values())
    assert "HarfBuzz" in str(found["weasyprint"]["detail"])


@pytest.mark.parametrize(
    ("mode", "fix"), [(0o644, "chmod 640"), (0o604, "chmod 600"), (0o660, "chmod 640")]
)
def test_a_pepper_file_open_beyond_its_group_is_a_problem_with_its_fix(
    cli: Cli, tmp_path: Path, mode: int, fix: str
) -> None:
    pepper = tmp_path / "pepper"
    pepper.write_text(TEST_PEPPER)  # the database's own pepper
    os.chmod(pepper, mode)
    result = cli.with_settings(pepper=None, pepper_file=str(pepper))("doctor")
    assert result.exit_code == 5
    assert f"(mode {mode:04o})  -> {fix} {pepper}\n" in result.stdout
    assert result.stdout.count(fix) == 1  # the fix once, not also in the problem's words


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_a_pepper_file_its_group_may_read_is_fine(cli: Cli, tmp_path: Path, mode: int) -> None:
    """0640: the agents sharing a SQLite database through a group (README)."""
    pepper = tmp_path / "pepper"
    pepper.write_text(TEST_PEPPER)
    os.chmod(pepper, mode)
    result = cli.with_settings(pepper=None, pepper_file=str(pepper))("--json", "doctor")
    assert result.exit_code == 0, result.output


def test_another_databases_pepper_fails_the_doctor(cli: Cli, tmp_path: Path) -> None:
    """The pepper a cron job found in the wrong folder: the doctor says so, before any PIN
    is checked with it."""
    pepper = tmp_path / "pepper"
    pepper.write_text("0123456789abcdef" * 4)
    os.chmod(pepper, 0o600)
    result = cli.with_settings(pepper=None, pepper_file=str(pepper))("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)["pepper"]
    assert found["ok"] is False
    assert f"pepper file {pepper} is not this database's pepper" in str(found["detail"])


def test_no_pepper_and_old_schema_are_reported(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = cli.with_settings(database_url=f"sqlite:///{tmp_path / 'blank.db'}", pepper=None)
    (tmp_path / "blank.db").write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # no data/pepper here
    result = empty("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)
    assert found["database"]["fix"] == "run cpms-admin db upgrade"
    # A first install: the pepper comes with the database, there is no backup to restore.
    assert (found["pepper"]["ok"], found["pepper"]["fix"]) == (
        False, "run cpms-admin db upgrade: it creates the pepper with the database",
    )  # fmt: skip
    # The same missing file beside a database in use: that is a lost pepper.
    lost = cli.with_settings(pepper=None, pepper_file=str(tmp_path / "pepper"))("--json", "doctor")
    assert checks(lost)["pepper"]["fix"] == "restore it from its backup"


def test_unreachable_smtp_is_reported(cli: Cli) -> None:
    result = cli.with_settings(smtp_url="smtp://127.0.0.1:1")("--json", "doctor")
    assert result.exit_code == 5
    assert checks(result)["mail"]["ok"] is False


def test_a_database_in_a_folder_everyone_writes_in_is_a_problem(cli: Cli, tmp_path: Path) -> None:
    """/var/tmp: another user could plant the pepper or hold the batch's lock beside it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    database = f"sqlite:///{shared / 'cpms.db'}"
    assert cli.with_settings(database_url=database)("db", "upgrade").exit_code == 0
    result = cli.with_settings(database_url=database)("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)["database"]
    assert found["ok"] is False and "is writable by every user" in str(found["detail"])
    assert found["fix"] == f"move the database to a folder of its own, or chmod o-w {shared}"


def test_a_database_file_every_user_may_read_is_a_problem(cli: Cli, tmp_path: Path) -> None:
    """A backup restored with 0644: every account on the machine could read the members."""
    folder = tmp_path / "restored"
    folder.mkdir(mode=0o755)
    path = folder / "cpms.db"
    run = cli.with_settings(database_url=f"sqlite:///{path}")
    assert run("db", "upgrade").exit_code == 0
    assert checks(run("--json", "doctor"))["database"]["ok"] is True  # made private
    path.chmod(0o644)
    result = run("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)["database"]
    assert str(found["detail"]).startswith(f"{path} is readable by every user")
    assert found["fix"] == f"chmod o-rwx {path} (README, Deploying: the database's group)"
    folder.chmod(0o750)  # a folder others may not enter keeps the file to its group
    assert checks(run("--json", "doctor"))["database"]["ok"] is True


def test_a_city_too_long_for_the_date_line_is_a_problem_before_the_night(cli: Cli) -> None:
    """Else every check passed and the nightly batch refused to print (exit 5)."""
    city = "Saint-Remy-en-Bouzemont-Saint-Genest-et-Isson"  # France's longest commune name
    result = cli.with_settings(letter_city=city)("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)["letters"]
    assert found["ok"] is False
    assert str(found["detail"]).startswith(f"CPMS_LETTER_CITY {city!r} makes a date line")
    assert checks(cli("--json", "doctor"))["letters"]["ok"] is True


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs the installed command as another user")
def test_a_pepper_file_this_user_cannot_reach_is_reported_not_a_traceback(
    tmp_path: Path,
) -> None:
    """The README's PostgreSQL setup keeps the pepper in a private folder: an agent who may
    not enter it got a PermissionError traceback from `doctor`, the command meant to say
    what is wrong, and from `db upgrade`."""
    shared = Path(tempfile.mkdtemp(prefix="cpms-doctor-"))  # a folder anyone may use
    try:
        shared.chmod(0o777)
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        pepper = private / "pepper"
        env = {
            **os.environ,
            "CPMS_DATABASE_URL": f"sqlite:///{shared / 'cpms.db'}",
            "CPMS_PEPPER_FILE": str(pepper),
            "CPMS_MAIL_DIR": str(shared / "outbox"),
        }
        env.pop("CPMS_PEPPER", None)
        made = subprocess.run([str(CPMS), "db", "upgrade"], env=env, capture_output=True)
        assert made.returncode == 0, made.stderr
        (shared / "cpms.db").chmod(0o666)
        said = (
            f"cannot open {pepper} (Permission denied): this user must be able to reach it "
            "(README, Deploying)"
        )
        doctor = subprocess.run([str(CPMS), "--json", "doctor"], env=env, cwd="/", user=NOBODY,
                                capture_output=True, text=True)  # fmt: skip
        assert doctor.returncode == 5, doctor.stderr
        found = {check["name"]: check for check in json.loads(doctor.stdout)}
        assert (found["pepper"]["ok"], found["pepper"]["detail"]) == (False, said)
        assert found["templates"]["ok"] is True  # the checks after it still ran
        upgrade = subprocess.run([str(CPMS), "db", "upgrade"], env=env, cwd="/", user=NOBODY,
                                 capture_output=True, text=True)  # fmt: skip
        assert (upgrade.returncode, upgrade.stderr) == (5, f"Error: {said}\n")
    finally:
        shutil.rmtree(shared)


def test_a_missing_address_font_is_named_with_the_package_to_install(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Addresses are measured with Liberation Sans: without it no letter prints, and the
    fix is a package (an installed cpms-admin has no `make system-deps`), not a setting."""
    monkeypatch.setattr("cpms_admin.letters.pdf.zones.FONT_FOLDERS", (tmp_path,))
    result = cli("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)["letters"]
    assert (found["ok"], found["detail"], found["fix"]) == (
        False,
        "the letters' font LiberationSans-Regular.ttf is missing",
        "apt-get install fonts-liberation2",
    )


@pytest.mark.parametrize("kind", ["a file", "a symbolic link"])
def test_an_audit_archive_purge_could_not_write_in_is_a_problem_today(
    cli: Cli, tmp_path: Path, kind: str
) -> None:
    """The cron recipe sets CPMS_AUDIT_ARCHIVE_DIR; `purge` first writes there when the
    oldest events pass their retention, a year on: the doctor says so at installation."""
    archive = tmp_path / "archive"
    if kind == "a file":
        archive.write_text("")
        said = f"{archive} exists and is not a directory"
    else:
        archive.symlink_to(tmp_path)
        said = f"{archive} is a symbolic link; give the directory itself"
    result = cli.with_settings(audit_archive_dir=str(archive))("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)
    assert (found["audit_archive"]["ok"], found["audit_archive"]["detail"]) == (
        False,
        f"purge cannot archive old audit events in {archive}/: {said}",
    )
    assert found["mail"]["ok"] is True
    fine = cli.with_settings(audit_archive_dir=str(tmp_path / "new"))("--json", "doctor")
    assert checks(fine)["audit_archive"]["ok"] is True
    assert not (tmp_path / "new").exists()  # checked, not made


def test_a_malformed_smtp_url_is_the_mail_check_s_problem_among_the_others(cli: Cli) -> None:
    """Every other command refuses it as it starts; the doctor lists it with its fix."""
    result = cli.with_settings(smtp_url="smtps://mail.example?starttls=1")("--json", "doctor")
    assert result.exit_code == 5
    found = checks(result)
    assert found["mail"]["detail"] == (
        "invalid CPMS_SMTP_URL: smtps:// is already TLS, drop ?starttls=1"
    )
    assert found["templates"]["ok"] is True
    refused = cli.with_settings(smtp_url="smtps://mail.example?starttls=1")("member", "list")
    assert (refused.exit_code, refused.stderr) == (
        5,
        "Error: invalid CPMS_SMTP_URL: smtps:// is already TLS, drop ?starttls=1\n",
    )


def test_an_smtp_url_from_the_config_file_is_named_there_in_the_problem_and_its_fix(
    cli: Cli, tmp_path: Path
) -> None:
    """The operator set it in the config file: there is where the doctor sends them."""
    config = tmp_path / "cpms.toml"
    config.write_text('smtp_url = "smtp://mail.example:0"\n', encoding="utf-8")
    environ = {**cli.env(), "CPMS_CONFIG": str(config), "CPMS_SMTP_URL": None}
    result = invoke(["--json", "doctor"], env=environ)
    assert result.exit_code == 5
    mail = checks(result)["mail"]
    assert (mail["detail"], mail["fix"]) == (
        f"invalid smtp_url in {config}: bad port number (0)",
        f"check smtp_url in {config} and the mail server",
    )
