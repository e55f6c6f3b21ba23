"""A real `cpms-admin members import` killed half-way (SIGKILL), then run again: every member
ends up there exactly once, and the counts of the two runs add up."""

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, func, select

from cpms_admin.bulk.importer import BATCH_SIZE
from cpms_admin.db import make_engine
from cpms_admin.models import Account, AuditEvent, Member
from cpms_admin.settings import Settings
from tests.audit_helpers import assert_chain_intact
from tests.harness import Cli
from tests.import_helpers import import_again_after_a_kill, person, write_csv
from tests.process_helpers import (
    assert_all_exit,
    cli_popen,
    descendants,
    start_held,
    wait_until,
    waiting_for_a_lock,
)

MEMBERS = 2 * BATCH_SIZE + BATCH_SIZE // 2  # the import writes two full batches and a half
STALL_KEY = 0x5354414C  # the advisory lock a stalled PostgreSQL insert waits for


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        members = session.exec(select(func.count()).select_from(Member)).one()
        accounts = session.exec(select(func.count()).select_from(Account)).one()
    return members, accounts


def member_events(session: Session) -> dict[int, list[int]]:
    """member id -> the import runs (their event ids) that created it, by its own events."""
    found: dict[int, list[int]] = {}
    query = select(AuditEvent).where(AuditEvent.action == "members.import.member")
    for event in session.exec(query):
        assert event.member_id is not None and json.loads(event.details)["change"] == "created"
        found.setdefault(event.member_id, []).append(json.loads(event.details)["run"])
    return found


@contextmanager
def insert_stalled(engine: Engine, nir: str) -> Iterator[None]:
    """Within the block, inserting the member `nir` stalls inside the database: the insert
    does not return, its transaction stays open, so a run that writes members in batches
    stops in the batch holding that row with the earlier batches committed, for as long as
    the test wants. PostgreSQL: the row waits for an advisory lock the test holds. SQLite
    (one lock for the whole file, no sleep function): the row sets off a query of billions
    of rows (about a minute), which the test cuts short by killing the run."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
            holder.execute(text(
                "CREATE FUNCTION cpms_test_stall() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_advisory_xact_lock({STALL_KEY}); RETURN NEW; END $$"
            ))  # fmt: skip
            holder.execute(text(
                "CREATE TRIGGER cpms_test_stall BEFORE INSERT ON member FOR EACH ROW "
                f"WHEN (NEW.nir = '{nir}') EXECUTE FUNCTION cpms_test_stall()"
            ))  # fmt: skip
            holder.execute(text(f"SELECT pg_advisory_lock({STALL_KEY})"))
            try:
                yield
            finally:
                # The killed run's server process still waits; end it, as the server would
                # once it noticed its client gone, so that its open insert is rolled back.
                waiting = text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    f"AND objid = {STALL_KEY} AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                for (pid,) in holder.execute(waiting).all():
                    holder.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
                holder.execute(text(f"SELECT pg_advisory_unlock({STALL_KEY})"))
                holder.execute(text("DROP TRIGGER cpms_test_stall ON member"))
                holder.execute(text("DROP FUNCTION cpms_test_stall()"))
        return
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cpms_test_stall (n INTEGER)"))
        conn.execute(text(
            "INSERT INTO cpms_test_stall WITH RECURSIVE c(n) AS "
            "(SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300) SELECT n FROM c"
        ))  # fmt: skip
        conn.execute(text(
            f"CREATE TRIGGER cpms_test_stall BEFORE INSERT ON member WHEN NEW.nir = '{nir}' "
            "BEGIN SELECT count(*) FROM cpms_test_stall a, cpms_test_stall b, "
            "cpms_test_stall c, cpms_test_stall d; END"
        ))  # fmt: skip
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER cpms_test_stall"))
            conn.execute(text("DROP TABLE cpms_test_stall"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find the helper process")
def test_a_killed_import_run_again_imports_every_member_once(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "big.csv", [person(n) for n in range(1, MEMBERS + 1)], sep=";")
    engine = make_engine(settings.database_url).execution_options(sqlite_begin="DEFERRED")
    with insert_stalled(engine, person(BATCH_SIZE + 1)["nir"]):  # the second batch's first
        process = cli_popen(
            ["members", "import", str(path)],
            env={**os.environ, **cli.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(
                lambda: process.poll() is not None or counts(engine)[0] > 0,
                what="the import's first batch",
            )
            assert process.poll() is None, process.communicate()
            helpers = descendants(process.pid)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    members, accounts = counts(engine)
    assert (members, accounts) == (BATCH_SIZE, BATCH_SIZE)  # a batch is all or nothing
    assert_all_exit(helpers, what="the checker process to exit after the import was killed")
    with Session(engine) as session:
        killed = session.exec(select(AuditEvent).where(AuditEvent.action == "members.import")).one()
        imported = set(session.exec(select(Member.id)).all())
        # What the killed run wrote, exactly: its event (and no closing one), and an event
        # for each member of the batch it committed.
        assert member_events(session) == {member_id: [killed.id] for member_id in imported}
    assert killed.outcome == "started"
    assert len(imported) == members
    assert_chain_intact(cli)  # the killed run's transaction left nothing half-sealed

    again = cli("--json", "members", "import", str(path))
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert (result["created"], result["skipped"], result["invalid"]) == (
        MEMBERS - members,
        members,
        0,
    )
    assert counts(engine) == (MEMBERS, MEMBERS)
    with Session(engine) as session:
        nirs = session.exec(select(Member.nir)).all()
        # Each member once in an import's story: by the killed run if its batch was committed.
        runs = {len(events) for events in member_events(session).values()}
        assert (len(member_events(session)), runs) == (MEMBERS, {1})
    assert sorted(nirs) == sorted(person(n)["nir"] for n in range(1, MEMBERS + 1))
    assert_chain_intact(cli)
    engine.dispose()


@pytest.mark.slow
def test_two_imports_of_one_file_at_once_both_finish(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The second import's batch waits for the first's to commit, then skips what it added:
    both exit 0, every member once (before, on PostgreSQL, the later insert failed with a
    unique violation and told the agent to use the --on-conflict skip they had used)."""
    source = write_csv(tmp_path / "m.csv", [person(n) for n in range(1, 51)])
    env = {**os.environ, **cli.env()}
    command = ["--json", "members", "import", str(source)]
    flag = tmp_path / "held"
    first = start_held(command, env=env, point="import.batch_read", flag=flag)
    second = cli_popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    if session.get_bind().dialect.name == "postgresql":
        wait_until(lambda: waiting_for_a_lock(session), what="the second import to wait")
    flag.unlink()
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    results = [json.loads(stdout) for stdout, _ in outputs]
    assert sorted((r["created"], r["skipped"]) for r in results) == [(0, 50), (50, 0)]
    session.rollback()
    assert session.exec(select(func.count()).select_from(Member)).one() == 50


@pytest.mark.slow
def test_an_errors_report_a_killed_import_left_half_written_is_removed_by_the_next(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """kill -9 runs no clean-up: the report's hidden temporary file (rejected rows: names and
    addresses) stayed for good. The next write of that report removes it."""
    rows = [person(n) for n in range(1, 31)] + [person(99, postcode="99999")]
    source = write_csv(tmp_path / "m.csv", rows)
    errors = tmp_path / "rejets.csv"
    assert import_again_after_a_kill(cli, source, errors) == 1  # the rejected row
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert "99999" in errors.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("meanwhile", ["nothing", "another run's report", "edited in place"])
def test_an_import_stopped_removes_its_earlier_report_only_if_nobody_wrote_it_since(
    cli: Cli, tmp_path: Path, meanwhile: str
) -> None:
    """A run stopped before writing its `--errors` report removes the report an earlier run
    left (a script would read it as this run's), but not one written while it ran: another
    run's report (a new file put in its place) or the agent's edit of it."""
    errors = tmp_path / "rejets.csv"
    earlier = "line,field,reason,nir\n9,nir,an earlier run's,1\n"
    errors.write_text(earlier, encoding="utf-8-sig")
    source = write_csv(tmp_path / "m.csv", [person(n) for n in range(1, 4)])
    command = ["members", "import", str(source), "--errors", str(errors)]
    flag = tmp_path / "held"
    held = start_held(command, env={**os.environ, **cli.env()}, point="import.batch_read",
                      flag=flag)  # fmt: skip
    later = "line,field,reason,nir\n2,postcode,a later run's,2\n"
    if meanwhile == "another run's report":
        written = tmp_path / ".rejets.csv.later"
        written.write_text(later, encoding="utf-8-sig")
        written.replace(errors)
    elif meanwhile == "edited in place":
        with errors.open("a", encoding="utf-8") as handle:
            handle.write("10,nir,the agent's note,3\n")
    held.send_signal(signal.SIGTERM)
    _, stderr = held.communicate(timeout=60)
    assert held.returncode == 143, stderr
    if meanwhile == "nothing":
        assert not errors.exists() and "removed" in stderr
    elif meanwhile == "another run's report":
        assert errors.read_text(encoding="utf-8-sig") == later and "removed" not in stderr
    else:
        assert errors.read_text(encoding="utf-8-sig").endswith("the agent's note,3\n")
