"""`letters batch --out` in a hostile or messy directory: a link, a directory of another user or
one everyone may write to is refused before anything is claimed; something else at a name the
batch needs, or a full disk, stops the run with one line, touches nothing that is not the
batch's, and never strands a committed batch: the next clean run publishes it."""

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from cpms_admin.letters import batch as letter_batch
from cpms_admin.letters import files as batch_files
from cpms_admin.models import SecurityCode
from tests.factories import snapshot
from tests.file_helpers import NOBODY, lax_umask, mode  # noqa: F401 (autouse fixture)
from tests.harness import Cli
from tests.letters_helpers import (
    assert_every_pdf_is_listed,
    batch,
    check_batch_dir,
    letters_by_status,
    manifests,
    queue_members,
)
from tests.process_helpers import run_with_settings_of

STAMP = "20261123-090000"  # the fake clock's time, in the final directory's name


def error_line(result: Any, code: int) -> str:
    """The run's one `Error:` line, last on stderr; no traceback (CliRunner keeps those)."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], result.stderr
    return str(lines[-1])


def plant(path: Path, kind: str, elsewhere: Path) -> None:
    """Something this program did not make at `path`; `elsewhere` is what a link points to."""
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "theirs.txt").write_text("theirs")
    if kind == "a file":
        path.write_text("theirs")
    elif kind == "a directory":
        path.mkdir()
        (path / "theirs.txt").write_text("theirs")
    elif kind == "a symbolic link":
        path.symlink_to(elsewhere)
    else:  # a dangling link
        path.symlink_to(elsewhere / "nothing")


def untouched(path: Path, kind: str, elsewhere: Path) -> bool:
    """`path` and what it points to are as `plant` left them."""
    theirs = sorted(p.name for p in elsewhere.iterdir()) == ["theirs.txt"]
    if kind == "a file":
        return theirs and path.read_text() == "theirs"
    if kind == "a directory":
        return theirs and sorted(p.name for p in path.iterdir()) == ["theirs.txt"]
    target = elsewhere if kind == "a symbolic link" else elsewhere / "nothing"
    return theirs and path.is_symlink() and path.readlink() == target


# -- the --out directory itself ------------------------------------------------------------------


def test_an_out_that_is_a_link_is_refused_and_claims_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 1)
    before = snapshot(session)
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.symlink_to(elsewhere)
    result = cli("letters", "batch", "--out", str(out))
    assert error_line(result, 2) == (
        f"Error: --out {out}: {out} is a symbolic link; give the directory itself"
    )
    assert snapshot(session) == before
    assert list(elsewhere.iterdir()) == []


def test_a_missing_pepper_stops_the_run_before_out_is_made(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Not ready (exit 5) is said before anything is made: no --out left behind."""
    queue_members(session, 1)
    before = snapshot(session)
    out = tmp_path / "new" / "out"
    missing = cli.with_settings(pepper=None, pepper_file=str(tmp_path / "no-pepper"))
    result = missing("letters", "batch", "--out", str(out))
    assert result.exit_code == 5, result.output
    assert "no-pepper" in result.stderr
    assert not (tmp_path / "new").exists()
    assert snapshot(session) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_an_out_of_another_user_is_refused_and_claims_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 1)
    before = snapshot(session)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    result = cli("letters", "batch", "--out", str(out))
    assert error_line(result, 2) == (
        f"Error: --out {out}: {out} belongs to another user (uid {NOBODY}) and is no folder "
        "your group shares; refusing to write"
    )
    assert snapshot(session) == before


def test_an_out_everyone_may_write_to_is_refused_unless_sticky(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 1)
    before = snapshot(session)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    result = cli("letters", "batch", "--out", str(out))
    assert error_line(result, 2) == (
        f"Error: --out {out}: {out} is writable by every user and not sticky; refusing to write"
    )
    assert snapshot(session) == before
    out.chmod(0o1777)  # like /tmp: what is ours there, nobody else may rename or delete
    assert batch(cli, out)["printed"] == 1


def test_a_new_out_is_private_whatever_the_umask_and_a_missing_parent_is_refused(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Only the last folder of --out is made: a mistyped path, or a script's empty variable,
    must not take the letters and their codes where nobody collects them."""
    queue_members(session, 1)
    before, srv = snapshot(session), tmp_path / "srv"
    srv.mkdir()
    mistyped = srv / "prnit" / "outgoing"
    refused = cli("letters", "batch", "--out", str(mistyped))
    assert error_line(refused, 2) == (
        f"Error: --out {mistyped}: {mistyped.parent} does not exist: check the path (only the "
        "last folder is made)"
    )
    empty = cli("letters", "batch", "--out", "")
    assert error_line(empty, 2).startswith("Error: Invalid value for '--out': empty")
    around = srv / "typo" / ".." / "outgoing"  # `..` is no way round it
    assert "typo/.. does not exist" in error_line(cli("letters", "batch", "--out", str(around)), 2)
    dry = cli("letters", "batch", "--out", str(mistyped), "--dry-run")  # told before the night
    assert error_line(dry, 2).endswith(
        "does not exist: check the path (only the last folder is made)"
    )
    (tmp_path / "a-file").write_text("")
    under_a_file = cli("letters", "batch", "--out", str(tmp_path / "a-file" / "x"), "--dry-run")
    assert "a-file is a file, not a folder: check the path" in error_line(under_a_file, 2)
    (tmp_path / "elsewhere").mkdir()
    (srv / "link").symlink_to(tmp_path / "elsewhere")
    linked = cli("letters", "batch", "--out", str(srv / "link"), "--dry-run")
    assert "is a symbolic link" in error_line(linked, 2)  # as the night's run would say
    (srv / "link").unlink()
    shared = tmp_path / "shared"  # anyone could swap the folder the run would make in it
    shared.mkdir()
    shared.chmod(0o777)
    for args in ([], ["--dry-run"]):  # the dry run refuses it as the night's run does
        unsafe = cli("letters", "batch", "--out", str(shared / "print"), *args)
        assert error_line(unsafe, 2) == (
            f"Error: --out {shared / 'print'}: {shared} is writable by every user and not "
            "sticky; refusing to write"
        ), args
    assert list(srv.iterdir()) == [] and list(shared.iterdir()) == []
    assert snapshot(session) == before
    out = srv / "outgoing"
    summary = batch(cli, out)
    assert mode(out) == 0o700
    [(directory, manifest)] = manifests(out)
    check_batch_dir(directory, manifest)  # 0700, its files 0600
    assert summary["directory"] == str(directory)


# -- something else at a name the batch needs -----------------------------------------------------


@pytest.mark.parametrize("kind", ["a file", "a directory", "a symbolic link", "a dangling link"])
def test_something_at_the_staging_name_stops_the_run_and_the_next_run_prints(
    cli: Cli, session: Session, tmp_path: Path, kind: str
) -> None:
    """A directory of ours at that name, with no run's mark, is another database's batch of
    the same number (one --out for two databases) or one made by hand: the next runs, which
    settle the abandoned batch 1, leave it alone too, and say so."""
    queue_members(session, 3)
    out = tmp_path / "out"
    out.mkdir()
    staging, elsewhere = out / ".batch-1.partial", tmp_path / "elsewhere"
    plant(staging, kind, elsewhere)
    result = cli("letters", "batch", "--out", str(out))
    shown = "a symbolic link" if "link" in kind else kind
    assert error_line(result, 4) == (
        f"Error: batch 1: {staging} already exists ({shown}) and is not this run's; move it "
        "away and run letters batch again"
    )
    assert (
        "letters batch: batch 1: it was abandoned and 3 letters went back in the queue"
        in result.stderr
    )
    assert letters_by_status(session).keys() == {"pending"}
    assert untouched(staging, kind, elsewhere)
    summary = batch(cli, out)  # a new batch, under a new name; the stranger is left alone
    assert (summary["batch_id"], summary["printed"]) == (2, 3)
    check_batch_dir(*manifests(out)[0])
    assert untouched(staging, kind, elsewhere)
    again = cli("letters", "batch", "--out", str(out))
    assert again.exit_code == 0 and untouched(staging, kind, elsewhere)
    if kind == "a directory":
        assert (
            f"letters batch: batch 1: {staging} was not made by its run (another database's "
            "batch, or a folder made by hand); left alone"
        ) in again.stderr


@pytest.mark.parametrize("kind", ["a file", "a symbolic link", "a directory"])
def test_something_at_the_final_name_stops_the_run_before_its_commit(
    cli: Cli, session: Session, tmp_path: Path, kind: str
) -> None:
    queue_members(session, 2)
    out = tmp_path / "out"
    out.mkdir()
    final, elsewhere = out / f"batch-1-{STAMP}", tmp_path / "elsewhere"
    plant(final, kind, elsewhere)
    result = cli("letters", "batch", "--out", str(out))
    assert error_line(result, 4) == (
        f"Error: batch 1: {final} already exists ({kind}); move it away and run letters batch again"
    )
    assert letters_by_status(session).keys() == {"pending"}
    assert session.exec(select(SecurityCode)).all() == []  # nothing printed counts
    assert sorted(p.name for p in out.iterdir()) == [final.name]  # the staging is gone
    assert untouched(final, kind, elsewhere)
    summary = batch(cli, out)
    assert (summary["batch_id"], summary["printed"]) == (2, 2)
    assert untouched(final, kind, elsewhere)


@pytest.mark.parametrize("kind", ["a file", "a symbolic link"])
def test_a_committed_batch_whose_name_was_taken_is_published_by_the_next_clean_run(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Taken between the last check and the rename: the batch is committed, so it waits in
    its staging directory, through runs that still find the name taken, until it is free."""
    queue_members(session, 2)
    out = tmp_path / "out"
    final, elsewhere = out / f"batch-1-{STAMP}", tmp_path / "elsewhere"

    def after_commit(name: str) -> None:
        if name == "letters.after_commit":
            plant(final, kind, elsewhere)

    monkeypatch.setattr(letter_batch, "failpoint", after_commit)
    refused = (
        f"Error: batch 1 is committed but {final} already exists ({kind}); move it away and "
        "run letters batch again to publish it"
    )
    assert error_line(cli("letters", "batch", "--out", str(out)), 4) == refused
    monkeypatch.undo()
    assert letters_by_status(session).keys() == {"printed"}
    assert_every_pdf_is_listed(out)  # nothing looks finished
    assert error_line(cli("letters", "batch", "--out", str(out)), 4) == refused
    assert untouched(final, kind, elsewhere)
    final.unlink()
    summary = batch(cli, out)
    assert summary["recovered"]["published"] == [str(final)]
    [(directory, manifest)] = manifests(out)
    assert (directory, manifest["batch_id"]) == (final, 1)
    check_batch_dir(directory, manifest)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["theirs.txt"]


def test_a_link_at_the_staging_name_of_a_published_batch_is_left_alone(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 1)
    out = tmp_path / "out"
    assert batch(cli, out)["batch_id"] == 1
    staging, elsewhere = out / ".batch-1.partial", tmp_path / "elsewhere"
    plant(staging, "a symbolic link", elsewhere)
    queue_members(session, 1)
    summary = batch(cli, out)
    assert (summary["batch_id"], summary["recovered"]["published"]) == (2, [])
    assert untouched(staging, "a symbolic link", elsewhere)


# -- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_while_publishing_is_one_line_and_a_later_run_finishes(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_members(session, 3)
    out = tmp_path / "out"
    real = batch_files.write_private_atomically

    @contextmanager
    def full(path: Path, **options: Any) -> Iterator[Any]:
        with real(path, **options) as handle:  # its temporary file is made, then the disk fills
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield handle

    monkeypatch.setattr(batch_files, "write_private_atomically", full)
    refused = (
        "Error: batch 1 is committed but could not be published (No space left on device); "
        "run letters batch again to publish it"
    )
    assert error_line(cli("letters", "batch", "--out", str(out)), 1) == refused
    assert letters_by_status(session).keys() == {"printed"}
    assert error_line(cli("letters", "batch", "--out", str(out)), 1) == refused  # still full
    assert_every_pdf_is_listed(out)
    monkeypatch.undo()
    summary = batch(cli, out)
    [(directory, manifest)] = manifests(out)
    assert summary["recovered"]["published"] == [str(directory)]
    check_batch_dir(directory, manifest)  # exactly its files: no temporary file left behind
    assert sorted(p.name for p in out.iterdir()) == [directory.name]


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the database another group than ours")
def test_what_runs_make_beside_a_group_s_database_is_the_group_s_without_setgid(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """In a folder without the setgid bit, the lock (or outbox) the cron user's run made took
    its own primary group: every other agent's `mail send` and batch then stopped on "cannot
    open the lock", and `doctor` said all was well."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("PostgreSQL's runs hold advisory locks, no file")
    assert not database.parent.stat().st_mode & 0o2000  # no setgid: files take their maker's
    os.chown(database, -1, NOBODY)  # the agents' group (not ours)
    database.chmod(0o660)
    queue_members(session, 1)
    assert batch(cli, tmp_path / "out")["printed"] == 1
    assert cli("mail", "send").exit_code == 0
    for made in (".batch-lock", ".mail-lock"):
        assert database.with_name(database.name + made).stat().st_gid == NOBODY, made


@pytest.mark.parametrize("database_mode", [0o600, 0o660])
def test_the_batch_lock_gets_the_database_files_group_access(
    cli: Cli, session: Session, tmp_path: Path, database_mode: int
) -> None:
    """Agents of one group share a SQLite database (README): a lock file the first run made
    owner-only stopped every other agent's batch with a traceback."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("PostgreSQL's runs hold advisory locks, no file")
    database.chmod(database_mode)
    queue_members(session, 1)
    assert batch(cli, tmp_path / "out")["printed"] == 1
    lock = database.with_name(database.name + ".batch-lock")
    assert mode(lock) == database_mode
    queue_members(session, 1)
    assert batch(cli, tmp_path / "out")["printed"] == 1  # the lock file, opened again
    assert mode(lock) == database_mode


@pytest.mark.parametrize(("command", "lock"), [("letters", ".batch-lock"), ("mail", ".mail-lock")])
def test_a_fifo_planted_as_a_run_lock_is_refused_not_waited_on(
    cli: Cli, tmp_path: Path, command: str, lock: str
) -> None:
    """Anyone who may write beside the database could plant a FIFO where the lock goes:
    opening it would wait for a writer for ever, and the nightly run with it."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("PostgreSQL's runs hold advisory locks, no file")
    fifo = database.with_name(database.name + lock)
    os.mkfifo(fifo, 0o600)
    args = ("letters", "batch", "--out", str(tmp_path / "out")) if command == "letters" else (
        "mail", "send")  # fmt: skip
    done = run_with_settings_of(cli, *args)
    assert (done.returncode, done.stderr) == (
        5,
        f"Error: the lock {fifo} is a special file, not a file: remove it while nothing runs\n",
    )


@pytest.mark.parametrize(
    ("command", "lock", "busy"),
    [("letters", ".batch-lock", "another letters batch is running"),
     ("mail", ".mail-lock", "another mail send is running")],
)  # fmt: skip
def test_a_run_reaching_the_database_by_a_link_meets_the_run_holding_its_lock(
    cli: Cli, tmp_path: Path, command: str, lock: str, busy: str
) -> None:
    """The lock is named after the database file itself: a run given a link to it once
    took a lock of its own beside the link, and sent the same e-mail as the other run."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("PostgreSQL's runs hold advisory locks, no file")
    alias = tmp_path / "links" / "alias.db"
    alias.parent.mkdir()
    alias.symlink_to(database)
    args = ("letters", "batch", "--out", str(tmp_path / "out")) if command == "letters" else (
        "mail", "send")  # fmt: skip
    held = os.open(database.with_name(database.name + lock), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the run on the database's own path holds it
        result = cli.with_settings(database_url=f"sqlite:///{alias}")(*args)
    finally:
        os.close(held)
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith(f"Error: {busy}")


def test_a_link_planted_as_the_run_lock_is_refused_saying_to_remove_it(
    cli: Cli, tmp_path: Path
) -> None:
    """Not "chmod 660 it", which would change the file the link points to."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("PostgreSQL's runs hold advisory locks, no file")
    lock = database.with_name(database.name + ".batch-lock")
    lock.symlink_to(tmp_path / "elsewhere")
    result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    assert (result.exit_code, result.stderr) == (
        5,
        f"Error: the lock {lock} is a symbolic link, not a file: remove it while nothing runs\n",
    )
