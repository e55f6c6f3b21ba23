"""Files of personal data are owner-only whatever the umask, and never written through a link
someone planted nor into a directory another user controls: the database, exports, import error
reports and e-mail files (the letters batch's --out: tests/test_batch_out_dir.py)."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpms_admin.db import sqlite_path
from cpms_admin.errors import InvalidInput, MailError
from cpms_admin.mail.transport import FileTransport
from cpms_admin.private_files import check_destination, private_dir, write_private_atomically
from tests.factories import make_nir
from tests.file_helpers import NOBODY, lax_umask, mode  # noqa: F401 (autouse fixture)
from tests.harness import TEST_PEPPER, Cli
from tests.mail_helpers import pin_mail
from tests.process_helpers import run_installed

BIN = Path(sys.executable).parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    """The installed command (or `python -m cpms_admin`) under umask 022, as cron may run it."""
    return run_installed(*args, cwd=cwd, env=env, module=module, umask=0o022)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


# -- owner-only, as real processes --------------------------------------------------------------


@pytest.mark.slow
def test_everything_the_installed_command_creates_is_owner_only_under_umask_022(
    tmp_path: Path,
) -> None:
    work, given = tmp_path / "work", tmp_path / "given"
    work.mkdir()
    given.mkdir()
    ok(run("db", "upgrade", "--create-dirs", cwd=work))
    by_post, by_mail = make_nir(), make_nir()
    address = ("--street", "3 place Bellecour", "--postcode", "69002", "--city", "Lyon")
    ok(run("member", "add", "--nir", by_post, "--last-name", "Lefèvre", "--first-name", "Zoé",
           *address, cwd=work))  # fmt: skip
    ok(run("member", "add", "--nir", by_mail, "--last-name", "Morel", "--first-name", "Léa",
           "--email", "lea@example.org", "--no-welcome", *address, cwd=work))  # fmt: skip
    ok(run("portal", "request-code", by_mail, cwd=work))  # an e-mail file in data/outbox
    # A run killed after its claim leaves SQLite's -wal and -shm as they were made.
    killed = run("letters", "batch", "--out", "nightly", cwd=work,
                 env={"CPMS_FAILPOINT": "letters.after_claim"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    data = work / "data"
    assert (mode(data / "cpms.db-wal"), mode(data / "cpms.db-shm")) == (0o600, 0o600)
    ok(run("letters", "batch", "--out", "nightly", cwd=work))
    ok(run("members", "export", "--out", "members.csv", cwd=work))
    bad = given / "bad.csv"
    bad.write_text("nir,last_name,first_name,street,postcode,city\n123,A,B,1 rue,75001,Paris\n")
    rejected = run("members", "import", str(bad), "--errors", "rejected.csv", cwd=work)
    assert rejected.returncode == 1, rejected.stderr
    made = sorted(work.rglob("*"))
    names = {p.relative_to(work).as_posix() for p in made}
    expected = {"data", "data/cpms.db", "nightly", "members.csv", "rejected.csv"}
    assert expected <= names
    assert [p for p in made if p.suffix == ".eml" and p.parent == data / "outbox"]
    assert [p for p in made if p.name == "manifest.json" and p.parent.parent.name == "nightly"]
    assert {
        p.relative_to(work).as_posix(): oct(mode(p))
        for p in made
        if mode(p) != (0o700 if p.is_dir() else 0o600)
    } == {}


@pytest.mark.slow
def test_python_dash_m_goes_through_the_same_entry_point(tmp_path: Path) -> None:
    ok(run("db", "upgrade", "--create-dirs", cwd=tmp_path, module=True))
    assert (mode(tmp_path / "data"), mode(tmp_path / "data" / "cpms.db")) == (0o700, 0o600)


# -- exports and error reports: no planted link, no folder of someone else ------------------------


def export(cli: Cli, out: Path) -> Any:
    return cli("members", "export", "--out", str(out))


def errors_report(cli: Cli, out: Path) -> Any:
    source = out.parent.parent / "in.csv"
    source.write_text("nir,last_name,first_name,street,postcode,city\n1,A,B,1 rue,75001,Paris\n")
    return cli("members", "import", str(source), "--errors", str(out))


Writer = Callable[[Cli, Path], Any]
WRITERS = [pytest.param(export, id="export --out"), pytest.param(errors_report, id="--errors")]


@pytest.mark.parametrize("write", WRITERS)
def test_a_link_planted_at_the_name_is_refused_and_its_target_left_alone(
    cli: Cli, tmp_path: Path, write: Writer
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    planted = shared / "x.csv"
    planted.symlink_to(victim)
    result = write(cli, planted)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {planted} is a symbolic link; refusing to replace it: remove it or choose "
        "another name\n"
    )
    assert victim.read_text() == "precious"
    assert planted.is_symlink() and sorted(p.name for p in shared.iterdir()) == ["x.csv"]


@pytest.mark.parametrize("write", WRITERS)
def test_a_directory_everyone_may_write_to_is_refused_unless_sticky(
    cli: Cli, tmp_path: Path, write: Writer
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = write(cli, shared / "x.csv")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {shared} is writable by every user and not sticky; " + (
        "refusing to write\n"
    )
    assert list(shared.iterdir()) == []
    shared.chmod(0o1777)  # like /tmp: nobody may rename or delete what is ours
    result = write(cli, shared / "x.csv")
    assert result.exit_code in (0, 1), result.output  # the import rejects its one row
    assert [(p.name, mode(p)) for p in shared.iterdir()] == [("x.csv", 0o600)]


@as_root
@pytest.mark.parametrize("write", WRITERS)
def test_a_directory_or_a_link_of_another_user_is_refused(
    cli: Cli, tmp_path: Path, write: Writer
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    result = write(cli, theirs / "x.csv")
    refused = (
        2,
        f"Error: {theirs} belongs to another user (uid {NOBODY}) and is no folder your group "
        "shares; refusing to write\n",
    )
    assert (result.exit_code, result.stderr) == refused
    theirs.chmod(0o2770)  # writable by a group that is not ours: still refused
    again = write(cli, theirs / "x.csv")
    assert (again.exit_code, again.stderr) == refused
    os.chown(theirs, NOBODY, os.getegid())  # a folder our group shares: written in
    assert write(cli, theirs / "x.csv").exit_code in (0, 1)
    assert (theirs / "x.csv").exists()
    real = tmp_path / "real"
    real.mkdir()
    their_link, our_link = tmp_path / "their-link", tmp_path / "our-link"
    their_link.symlink_to(real)
    os.lchown(their_link, NOBODY, NOBODY)
    our_link.symlink_to(real)
    result = write(cli, their_link / "x.csv")
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {their_link} is a symbolic link of another user (uid {NOBODY}); refusing to "
        "follow it\n",
    )
    assert list(real.iterdir()) == []
    result = write(cli, our_link / "x.csv")
    assert result.exit_code in (0, 1), result.output
    assert [(p.name, mode(p)) for p in real.iterdir()] == [("x.csv", 0o600)]


def test_an_export_replaces_our_own_file_and_leaves_it_private(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "members.csv"
    out.write_text("old")
    out.chmod(0o644)
    assert export(cli, out).exit_code == 0
    assert out.read_text().startswith("nir,") and mode(out) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- never onto the files the program runs on ---------------------------------------------------


def _import_report(cli: Cli, out: Path) -> Any:
    source = out.parent / "to-import.csv"
    source.write_text("nir,last_name,first_name,street,postcode,city\n1,A,B,1 rue,75001,Paris\n")
    return cli("members", "import", str(source), "--errors", str(out))


ADD_MEMBER = (
    *("member", "add", "--nir", make_nir(7), "--last-name", "Roux", "--first-name", "Léa"),
    *("--street", "1 rue de la Paix", "--postcode", "75002", "--city", "Paris"),
)
OUTPUTS: dict[str, Writer] = {
    "members export": export,
    "members import --errors": _import_report,
    "letters preview": lambda cli, out: cli("letters", "preview", "welcome", "--out", str(out)),
    "member dossier --force": lambda cli, out: cli(
        "member", "dossier", make_nir(7), "--format", "json", "--out", str(out), "--force"
    ),
}


@pytest.mark.parametrize("command", OUTPUTS)
def test_no_output_replaces_the_database_its_files_or_the_pepper(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    """A file name mistyped or completed by the shell must not destroy the database or the
    pepper, which nothing can recover: refused, whichever command writes it."""
    pepper = tmp_path / "pepper"
    pepper.write_text(f"{TEST_PEPPER}\n")
    pepper.chmod(0o600)
    cli = cli.with_settings(pepper=None, pepper_file=str(pepper))
    assert cli(*ADD_MEMBER).exit_code == 0
    targets = {pepper: "the pepper file"}
    database = sqlite_path(cli.settings.database_url)
    if database is not None:  # PostgreSQL has no file of ours
        targets |= {
            database: "the database",
            database.with_name(database.name + "-wal"): "one of the database's files",
            database.with_name(database.name + ".batch-lock"): "one of the database's files",
        }
    for target, what in targets.items():
        before = target.read_bytes() if target.exists() else None
        result = OUTPUTS[command](cli, target)
        assert result.exit_code == 2, result.output
        assert result.stderr.endswith(
            f"Error: {target} is {what}; refusing to replace it: choose another name\n"
        )
        assert (target.read_bytes() if target.exists() else None) == before
    assert cli("member", "show", make_nir(7)).exit_code == 0  # the database still works
    if database is not None:  # a name that merely begins with the database's is fine
        beside = database.with_name(database.name + ".csv")
        assert OUTPUTS[command](cli, beside).exit_code in (0, 1)


INPUTS = {
    "members import": lambda path: ("members", "import", str(path)),
    "members import --dry-run": lambda path: ("members", "import", str(path), "--dry-run"),
    "code campaign --from-file": lambda path: (
        *("code", "campaign", "--from-file", str(path), "--reason", "x", "--dry-run"),
    ),
    "letters returned --from-file": lambda path: ("letters", "returned", "--from-file", str(path)),
    "audit verify --archive": lambda path: ("audit", "verify", "--archive", str(path)),
}


@pytest.mark.parametrize("command", INPUTS)
def test_no_command_reads_the_pepper_or_the_database_as_its_input(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    """Completed by the shell, the pepper file given as members to import was refused for
    its first line, quoted in full: the secret in the terminal and in cron's e-mail."""
    pepper = tmp_path / "pepper"
    pepper.write_text(f"{TEST_PEPPER}\n")
    pepper.chmod(0o600)
    linked = tmp_path / "members.csv"
    os.link(pepper, linked)  # another name for the same file
    cli = cli.with_settings(pepper=None, pepper_file=str(pepper))
    targets = {pepper: "the pepper file", linked: "the pepper file"}
    database = sqlite_path(cli.settings.database_url)
    if database is not None:
        targets[database] = "the database"
    for target, what in targets.items():
        result = cli(*INPUTS[command](target))
        assert result.exit_code == 2, result.output
        assert TEST_PEPPER not in result.output
        assert result.stderr.startswith(f"Error: {target} is {what}, not "), result.stderr
        assert result.stderr.endswith(": give the file you meant\n"), result.stderr


@pytest.mark.parametrize("command", ["members import", "code campaign --from-file"])
def test_a_copy_of_the_pepper_given_as_input_is_never_quoted(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    """A backup of the pepper file (`pepper.bak`) is no file the command runs on: read, its
    first line was quoted in the refusal, the pepper in full."""
    secret = "0123456789abcdef" * 4  # as `pepper rotate` writes them
    copy = tmp_path / "pepper.bak"
    copy.write_text(f"1:{secret}\n")
    for json_flag in ((), ("--json",)):
        result = cli(*json_flag, *INPUTS[command](copy))
        assert result.exit_code == 2, result.output
        assert secret[:32] not in result.output, result.output
        assert "[hex digits hidden]" in result.stderr


def test_a_long_value_of_hex_letters_alone_is_quoted_as_typed(cli: Cli) -> None:
    """A refused e-mail address of 65 a's is no key: the message quotes it as typed."""
    assert cli(*ADD_MEMBER).exit_code == 0
    refused = cli("member", "update", make_nir(7), "--email", "a" * 65 + "@x.fr")
    assert refused.exit_code == 2
    assert "a" * 65 in refused.stderr and "hidden" not in refused.stderr, refused.stderr


def test_an_import_error_report_never_replaces_the_file_being_imported(
    cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    text = "nir,last_name,first_name,street,postcode,city\n1,A,B,1 rue,75001,Paris\n"
    source.write_text(text)
    result = cli("members", "import", str(source), "--errors", str(source))
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {source} is the file being imported; refusing to replace it: choose another name\n"
    )
    assert source.read_text() == text


@pytest.mark.parametrize(
    "command",
    [
        ("letters", "batch", "--out", "-"),
        ("letters", "preview", "welcome", "--out", "-"),
        ("member", "dossier", make_nir(7), "--out", "-"),
        ("members", "import", "in.csv", "--errors", "-"),
    ],
    ids=["batch", "preview", "dossier", "import-errors"],
)
def test_dash_is_not_taken_as_a_file_name(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    """`-` is standard output to a shell user; a file named `-` is a surprise and a trap."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "in.csv").write_text("nir,last_name,first_name\n1,A,B\n")
    assert cli(*ADD_MEMBER).exit_code == 0
    result = cli(*command)
    assert result.exit_code == 2, result.output
    assert "this command writes a file, not standard output: give a path" in result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["in.csv"]


def test_a_preview_is_never_written_through_a_planted_link(cli: Cli, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / "sample.pdf"
    planted.symlink_to(victim)
    result = cli("letters", "preview", "welcome", "--out", str(planted))
    assert result.exit_code == 2, result.output
    assert "is a symbolic link; refusing to replace it" in result.stderr
    assert victim.read_text() == "precious"
    fresh = tmp_path / "fresh.pdf"
    assert cli("letters", "preview", "welcome", "--out", str(fresh)).exit_code == 0
    assert mode(fresh) == 0o600 and fresh.read_bytes().startswith(b"%PDF-")


# -- the helpers ----------------------------------------------------------------------------------


def test_a_file_appears_complete_and_private_or_not_at_all(tmp_path: Path) -> None:
    with write_private_atomically(tmp_path / "a.bin") as binary:
        binary.write(b"\x00\x01")
    with write_private_atomically(tmp_path / "b.txt", encoding="utf-8") as text:
        text.write("é\r\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "é\r\n".encode()  # line ends as written
    with pytest.raises(RuntimeError), write_private_atomically(tmp_path / "c.txt") as failing:
        failing.write(b"half")
        raise RuntimeError("the export failed")
    assert sorted((p.name, mode(p)) for p in tmp_path.iterdir()) == [
        ("a.bin", 0o600),
        ("b.txt", 0o600),
    ]


def test_destinations_that_are_not_plain_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InvalidInput, match=r"fifo is a special file; refusing to replace it"):
        check_destination(tmp_path / "fifo")
    with pytest.raises(InvalidInput, match=r"is a directory, not a file name"):
        check_destination(tmp_path / "..")
    with pytest.raises(InvalidInput, match=r"missing: no such directory"):
        check_destination(tmp_path / "missing" / "x.csv")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    with pytest.raises(InvalidInput, match=r"loop-a: too many symbolic links"):
        check_destination(tmp_path / "loop-a" / "x.csv")
    assert check_destination(tmp_path / "x.csv") == tmp_path / "x.csv"


def test_a_new_directory_and_its_missing_parents_are_private(tmp_path: Path) -> None:
    assert private_dir(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "c"
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(InvalidInput, match=r"link is a symbolic link; give the directory itself"):
        private_dir(tmp_path / "link")
    assert private_dir(tmp_path / "link" / "b") == tmp_path / "a" / "b"  # our link, on the way


# -- e-mail files -------------------------------------------------------------------------------


def test_the_mail_directory_and_its_parents_are_created_private(tmp_path: Path) -> None:
    outbox = tmp_path / "data" / "outbox"
    FileTransport(outbox).send(pin_mail())
    assert (mode(tmp_path / "data"), mode(outbox)) == (0o700, 0o700)
    assert [mode(p) for p in outbox.iterdir()] == [0o600]


def test_a_mail_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outbox = tmp_path / "outbox"
    outbox.symlink_to(elsewhere)
    with pytest.raises(MailError) as refused:
        FileTransport(outbox).send(pin_mail())
    assert str(refused.value) == (
        f"cannot write e-mail to {outbox}: {outbox} is a symbolic link; give the directory itself"
    )
    assert list(elsewhere.iterdir()) == []


@as_root
def test_a_mail_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    os.chown(outbox, NOBODY, NOBODY)
    with pytest.raises(MailError, match=rf"outbox belongs to another user \(uid {NOBODY}\)"):
        FileTransport(outbox).send(pin_mail())
    assert list(outbox.iterdir()) == []


def test_a_temporary_file_a_live_writer_holds_is_never_removed(tmp_path: Path) -> None:
    """What a killed run left beside a file is removed when the file is next written; what a
    live run is writing (its lock held), or one just made, is not."""
    import fcntl

    final = tmp_path / "report.csv"
    dead, live, young = (tmp_path / f".report.csv.{n * 8}.tmp" for n in "abc")
    kept = tmp_path / ".report.csv.backup-before-migration.tmp"  # no name a writer gives
    for path in (dead, live, young, kept):
        path.write_text("rows")
    for path in (dead, live, kept):
        os.utime(path, (0, 0))
    with open(live, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with write_private_atomically(final) as out:
            out.write(b"done")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([live.name, young.name, kept.name, final.name])
