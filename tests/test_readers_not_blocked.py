"""Commands that only look answer at once while another process holds SQLite's write lock (the
nightly batch, an import): they read the last committed state, where a writer still waits.

Each test opens its own connection, `BEGIN IMMEDIATE`, writes and keeps the transaction open,
as another `cpms-admin` process would. PostgreSQL readers never wait for writers; there the
reader session is READ ONLY, and only for its own transaction.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session, select

from cpms_admin import db
from cpms_admin.cli import context
from cpms_admin.cli.context import AppContext
from cpms_admin.models import Member
from cpms_admin.settings import Settings
from tests.factories import make_member
from tests.harness import Cli
from tests.process_helpers import run_with_settings_of
from tests.warm_cli import start_warm_parent

BUSY_MS = 1000  # far below the 30 s of production: a command that waits fails fast
UNCOMMITTED = "Uncommitted"


def sqlite_file(settings: Settings) -> Path:
    path = db.sqlite_path(settings.database_url)
    if path is None:
        pytest.skip("PostgreSQL readers never wait for a writer")
    return path


@pytest.fixture
def writer(settings: Settings) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction, open for the whole test: a member's city changed
    and not committed."""
    conn = sqlite3.connect(sqlite_file(settings), isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE member SET city = ?", (UNCOMMITTED,))
    yield conn
    if conn.in_transaction:
        conn.rollback()
    conn.close()


@pytest.fixture
def busy_ms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """Set the busy timeout of the engines commands make (the database and doctor's). The
    engine is the process's for its URL (`db.make_engine`): its listeners go with the test."""
    real = db.make_engine
    added: list[tuple[Engine, Callable[..., None]]] = []

    def set_busy(ms: int) -> None:
        def make_engine(url: str, **options: Any) -> Engine:
            engine = real(url, **options)

            def busy(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute(f"PRAGMA busy_timeout = {ms}")

            event.listen(engine, "connect", busy)  # after db's own tuning, so it wins
            added.append((engine, busy))
            return engine

        monkeypatch.setattr(db, "make_engine", make_engine)
        monkeypatch.setattr(context, "make_engine", make_engine)

    set_busy(BUSY_MS)
    yield set_busy
    for engine, busy in added:
        event.remove(engine, "connect", busy)


def timed(cli: Cli, *args: str) -> tuple[Any, float]:
    started = time.monotonic()
    result = cli(*args)
    return result, time.monotonic() - started


@pytest.fixture
def member(session: Session) -> Member:
    return make_member(session, city="Lyon")  # with its welcome letter and audit event


def test_member_show_and_list_read_the_committed_state(
    cli: Cli, member: Member, writer: sqlite3.Connection, busy_ms: object
) -> None:
    shown, seconds = timed(cli, "member", "show", member.nir)
    assert (shown.exit_code, shown.stderr) == (0, ""), shown.output
    assert "69002 LYON" in shown.stdout and UNCOMMITTED.upper() not in shown.stdout
    assert seconds < 2
    listed, seconds = timed(cli, "--json", "member", "list", "--search", "lyon")
    assert listed.exit_code == 0, listed.output
    assert [row["nir"] for row in json.loads(listed.stdout)] == [member.nir]
    assert seconds < 2


def test_account_status_and_audit_list_answer(
    cli: Cli, member: Member, writer: sqlite3.Connection, busy_ms: object
) -> None:
    status, seconds = timed(cli, "account", "status", member.nir)
    assert status.exit_code == 0, status.output
    assert "member active, account no_pin" in status.stdout and seconds < 2
    audit, seconds = timed(cli, "--json", "audit", "list", "--nir", member.nir)
    assert audit.exit_code == 0, audit.output
    assert [event["action"] for event in json.loads(audit.stdout)] == ["member.add"]
    assert seconds < 2


def test_letters_list_and_preview_answer(
    cli: Cli, member: Member, writer: sqlite3.Connection, busy_ms: object, tmp_path: Path
) -> None:
    listed, seconds = timed(cli, "--json", "letters", "list", "--status", "pending")
    assert listed.exit_code == 0, listed.output
    assert [(row["kind"], row["nir"]) for row in json.loads(listed.stdout)] == [
        ("welcome", member.nir)
    ]
    assert seconds < 2
    out = tmp_path / "sample.pdf"
    preview = cli("--json", "letters", "preview", "welcome", "--out", str(out), "--nir", member.nir)
    assert preview.exit_code == 0, preview.output  # waiting would be "database is locked"
    assert json.loads(preview.stdout)["pages"] >= 1 and out.stat().st_size > 0


def test_doctor_answers(cli: Cli, writer: sqlite3.Connection, busy_ms: object) -> None:
    result = cli("--json", "doctor")
    assert result.exit_code == 0, result.output
    checks = {row["name"]: row for row in json.loads(result.stdout)}
    assert checks["database"]["ok"] and "reachable" in checks["database"]["detail"]


@pytest.mark.slow
def test_the_command_answers_while_another_process_writes(
    cli: Cli, member: Member, writer: sqlite3.Connection, tmp_path: Path
) -> None:
    """With the real 30 s busy timeout: a reader that waited would take 30 s, then fail."""
    start_warm_parent()  # its imports are not the command's wait
    started = time.monotonic()
    result = run_with_settings_of(cli, "member", "show", member.nir, cwd=tmp_path)
    seconds = time.monotonic() - started
    assert (result.returncode, result.stderr) == (0, "")
    assert "69002 LYON" in result.stdout
    assert seconds < 5


def test_a_writer_still_waits_for_the_lock_then_goes_on(
    cli: Cli,
    member: Member,
    writer: sqlite3.Connection,
    busy_ms: Callable[[int], None],
) -> None:
    """The other transaction ends only once the command asks for the write lock, and a
    while after: the command waited for it, then wrote."""
    busy_ms(10_000)
    asked, hold = threading.Event(), 0.3

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):  # the command's, about to wait
            asked.set()

    def release() -> None:
        if asked.wait(timeout=30):
            time.sleep(hold)  # the command waits all that time: the lock is not free
        writer.rollback()

    event.listen(Engine, "before_cursor_execute", on_execute)
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        result, seconds = timed(
            cli, "member", "update", member.nir, "--street", "1 rue Sala", "--reason", "x"
        )
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
        releaser.join()
    assert asked.is_set(), "the command never asked for the write lock"
    assert result.exit_code == 0, result.output
    assert seconds >= hold  # it waited for the other transaction, as before
    shown = cli("--json", "member", "show", member.nir)
    assert json.loads(shown.stdout)["address"]["lines"][-2] == "1 RUE SALA"


def test_a_writer_gives_up_after_the_busy_timeout(
    cli: Cli, member: Member, writer: sqlite3.Connection, busy_ms: object
) -> None:
    result, seconds = timed(
        cli, "member", "update", member.nir, "--street", "1 rue Sala", "--reason", "x"
    )
    assert result.exit_code == 5
    assert result.stderr.startswith("Error: ") and result.stderr.endswith("database is locked\n")
    assert result.stderr.count("\n") == 1 and seconds >= BUSY_MS / 1000


def test_a_reader_session_takes_no_write_lock_and_is_read_only_on_postgresql(
    settings: Settings,
) -> None:
    app_ = AppContext(settings=settings, label=None, command="member show")
    try:
        with app_.session(read_only=True) as session:
            assert session.exec(select(Member)).all() == []
            if app_.engine().dialect.name == "postgresql":
                shown = session.execute(text("SHOW transaction_read_only")).scalar()
                assert shown == "on"
            else:
                other = sqlite3.connect(sqlite_file(settings), isolation_level=None, timeout=0)
                other.execute("BEGIN IMMEDIATE")  # would be "database is locked" otherwise
                other.rollback()
                other.close()
        with app_.session() as session:  # the pooled connection is writable again
            if app_.engine().dialect.name == "postgresql":
                assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"
    finally:
        app_.close()
