"""The schema and the SQLite tuning that lets the cron and an agent work at once."""

import gc
import json
import os
import subprocess
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Index, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.bulk.import_writes import one_batch_at_a_time
from cpms_admin.db import (
    MIGRATIONS_DIR,
    make_engine,
    migrate,
    normalise_url,
    sqlite_path,
    transaction,
)
from cpms_admin.errors import Conflict, NotReady
from cpms_admin.members import records, views
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.models import AuditEvent, PepperKey, UnknownLogin
from cpms_admin.settings import Settings
from tests.databases import PG_URL, created_login, new_pg_database
from tests.factories import make_member
from tests.harness import TEST_PEPPER, Cli
from tests.process_helpers import (
    cli_popen,
    cli_run,
    start_held,
    wait_until,
    waiting_for_a_lock,
)


def test_head_revision_constant_matches_the_migrations() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_schema_newer_than_this_release_says_to_install_the_newer_one(
    cli: Cli, engine: Engine
) -> None:
    """An older cpms-admin on a database a newer one upgraded: `db upgrade` cannot help (it
    was a traceback: Alembic knows no such revision), so nothing may send the agent there."""
    newer = f"{int(HEAD_REVISION) + 1:04d}"
    stamp = text("UPDATE alembic_version SET version_num = :v")
    with engine.begin() as conn:
        conn.execute(stamp, {"v": newer})
    try:
        _told_to_install_the_newer_release(cli, engine, newer)
    finally:  # the next test's database is this one, emptied (PostgreSQL)
        with engine.begin() as conn:
            conn.execute(stamp, {"v": HEAD_REVISION})


def _told_to_install_the_newer_release(cli: Cli, engine: Engine, newer: str) -> None:
    said = (
        f"database schema is at {newer}, newer than this cpms-admin knows (its latest is "
        f"{HEAD_REVISION}); install the cpms-admin release that upgraded it"
    )
    for command in (["db", "upgrade"], ["member", "list"]):
        result = cli(*command)
        assert (result.exit_code, result.stderr) == (5, f"Error: {said}\n")
    status = cli("db", "status")
    assert status.stdout.splitlines()[-1] == "install the cpms-admin release that upgraded it"
    doctor = {check["name"]: check for check in json.loads(cli("--json", "doctor").stdout)}
    assert doctor["database"]["fix"] == "install the cpms-admin release that upgraded it"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == newer


def test_each_job_has_its_own_advisory_lock(cli: Cli, engine: Engine) -> None:
    """PostgreSQL: an import's batch, while it writes, holds the import lock; a purge or a
    campaign started meanwhile is not "another purge (campaign) running" for it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's runs lock files, each named after its job")
    with Session(engine) as importing:
        one_batch_at_a_time(importing)  # held until this transaction ends
        purge = cli("purge")
        assert purge.exit_code == 0, purge.stderr
        campaign = cli("code", "campaign", "--no-pin", "--reason", "at once")
        assert campaign.exit_code == 0, campaign.stderr
        importing.rollback()


def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        # What a million-row import's speed rests on (bench/scale_bulk.py).
        assert conn.execute(text("PRAGMA cache_size")).scalar() == -65536
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 16000


def test_engine_is_lazy_and_missing_file_is_not_created(tmp_path: Path) -> None:
    import pytest

    from cpms_admin.errors import NotReady

    with pytest.raises(NotReady, match="does not exist"):
        make_engine(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("options", ["?mode=ro&uri=true", "?mode=ro"])
def test_a_sqlite_url_with_options_is_refused_and_creates_nothing(
    cli: Cli, tmp_path: Path, options: str
) -> None:
    """SQLAlchemy reads `?mode=ro&uri=true` as a file named `cpms.db?mode=ro` (its URI form
    wants `file:`): an empty second database, which `db upgrade` would then have built."""
    database = tmp_path / "cpms.db"
    database.write_bytes(b"")
    result = cli("--json", "--db", f"sqlite:///{database}{options}", "member", "list")
    named = "mode, uri" if "uri" in options else "mode"
    assert (result.exit_code, json.loads(result.stdout)["error"]) == (
        2,
        f"SQLite database URL with options ({named}): give the file's path alone, e.g. "
        "sqlite:////srv/cpms/cpms.db",
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cpms.db"]


def test_the_engine_kept_for_a_url_reads_the_file_there_after_each_dispose(
    tmp_path: Path,
) -> None:
    """The process keeps one engine per URL (the statements it compiled serve every session).
    Disposed, it holds no connection: a database put in the file's place since (a restore) is
    the one it reads, and a file gone is NotReady again."""
    import sqlite3

    path = tmp_path / "kept.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url, must_exist=False)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    path.unlink()
    with sqlite3.connect(path) as restored:
        restored.execute("CREATE TABLE t (v INTEGER)")
        restored.execute("INSERT INTO t VALUES (2)")
    restored.close()
    assert make_engine(url) is engine
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalar_one() == 2
    engine.dispose()
    path.unlink()
    with pytest.raises(NotReady, match="does not exist"):
        make_engine(url)


def test_a_command_leaves_no_connection_open_behind_it(
    cli: Cli, session: Session, db_url: str
) -> None:
    """The engine outlives the command (one per URL and process), its connections do not:
    an unlock, whose audit event is sealed with the pepper after its fingerprints are read on
    a connection of their own while the command's transaction holds another, leaves no file
    handle on the SQLite database and no session on the PostgreSQL one. A session left would
    keep a copy of it from being made (CREATE DATABASE ... TEMPLATE), a handle would read a
    database since restored in its place."""
    member = make_member(session)
    gc.collect()  # what earlier tests left to the collector (the PostgreSQL database is shared)
    gc.disable()  # and a connection this command left to it stays open to be counted
    try:
        unlocked = cli("account", "unlock", member.nir, "--reason", "called")
        assert unlocked.exit_code == 0, unlocked.stderr
        open_now = _connections_to(db_url)
    finally:
        gc.enable()
    assert open_now == 0


def _connections_to(db_url: str) -> int:
    """This process's file handles on a SQLite database, or the sessions on a PostgreSQL one."""
    database = sqlite_path(db_url)
    if database is not None:
        handles = [os.path.realpath(fd) for fd in Path("/proc/self/fd").iterdir()]
        return sum(handle in (str(database), f"{database}-wal") for handle in handles)
    admin = create_engine(normalise_url(str(PG_URL)))
    with admin.connect() as conn:
        sessions = conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
            {"name": make_url(db_url).database},
        ).scalar_one()
    admin.dispose()
    return int(sessions)


def test_a_forked_child_makes_an_engine_of_its_own(tmp_path: Path) -> None:
    """A connection must not cross a fork (two processes on one SQLite handle corrupt it):
    a child forked by a command (the import's file checker) starts with no engine."""
    url = f"sqlite:///{tmp_path / 'forked.db'}"
    engine = make_engine(url, must_exist=False)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    pid = os.fork()
    if pid == 0:
        os._exit(0 if make_engine(url) is not engine else 1)
    _, status = os.waitpid(pid, 0)
    engine.dispose()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_folder_this_user_cannot_open_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent outside the database's group: EACCES on the folder (root never gets it, so it
    is simulated), said in one line with what to check, not a traceback."""

    def denied(path: Path, **_kwargs: object) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "exists", denied)
    with pytest.raises(NotReady, match="permission denied on its folder; this user must"):
        make_engine(f"sqlite:///{tmp_path / 'cpms.db'}")


def test_the_migrated_schema_is_the_one_the_models_describe(engine: Engine) -> None:
    """Every table, column, index and key of the models is made by the migrations."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import cpms_admin.models  # noqa: F401  (the tables, in SQLModel.metadata)
    from cpms_admin.members.search import outside_search_index

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": outside_search_index})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_each_index_holds_the_rows_the_models_say(engine: Engine) -> None:
    """Alembic does not compare a partial index's condition: the models keep it in the
    index's `info` (models.partial_index), and the migrated database holds the same one on
    either engine; every other index holds every row. PostgreSQL rewrites a condition as it
    stores it, so the model's is compared through a scratch index made and rolled back."""
    from sqlmodel import SQLModel

    import cpms_admin.models  # noqa: F401  (the tables, in SQLModel.metadata)

    indexes = [index for table in SQLModel.metadata.tables.values() for index in table.indexes]
    assert any(index.info.get("where") for index in indexes)
    with engine.connect() as conn:
        scratch = conn.begin()
        try:
            for index in indexes:
                said = index.info.get("where")
                expected = said and _stored_condition(conn, index, made_with=said)
                assert _stored_condition(conn, index) == expected, index.name
        finally:
            scratch.rollback()  # the scratch indexes with it


def _stored_condition(conn: Connection, index: Index, made_with: str = "") -> str | None:
    """The condition of `index` as the database stores it, None for a whole index; with
    `made_with`, that of a scratch index of the same columns made with that condition."""
    name = index.name
    if made_with:
        name = f"scratch_{name}"
        columns = ", ".join(column.name for column in index.columns)
        conn.execute(
            text(f"CREATE INDEX {name} ON {index.table.name} ({columns}) WHERE {made_with}")
        )
    if conn.dialect.name == "sqlite":
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name})
        made = sql.scalar_one()
        return made.split(" WHERE ", 1)[1] if made and " WHERE " in made else None
    condition = conn.execute(
        text(
            "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"
        ),
        {"n": name},
    )
    return condition.scalar_one()


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: set CPMS_TEST_DATABASE_URL")
def test_an_owner_that_may_not_create_roles_is_told_what_to_grant(tmp_path: Path) -> None:
    """A role of its own owns the database (README, PostgreSQL). Without CREATEROLE, the
    first upgrade cannot make the agents' groups: exit 5 saying what to grant, not a refusal
    blamed on a disabled agent; once granted, the same command upgrades."""
    with created_login(PG_URL) as owner, new_pg_database() as url:
        admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{make_url(url).database}" OWNER TO {owner}'))
        as_owner = make_url(url).set(username=owner, password=None)
        cli = Cli(Settings(database_url=as_owner.render_as_string(hide_password=False),
                           pepper=TEST_PEPPER, mail_dir=str(tmp_path)))  # fmt: skip
        refused = cli("db", "upgrade")
        assert refused.exit_code == 5, refused.output
        assert "the database login may not create roles" in refused.stderr
        with admin.connect() as conn:
            conn.execute(text(f"ALTER ROLE {owner} CREATEROLE"))
        admin.dispose()
        upgraded = cli("db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.output


# --- the unit of work --------------------------------------------------------------------


def _audit_actions(engine: Engine) -> list[str]:
    with Session(engine) as other:  # what another process would see: committed rows only
        return list(other.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))))


def test_a_transaction_commits_its_work_then_runs_its_hooks(engine: Engine) -> None:
    seen: list[list[str]] = []
    with Session(engine) as session, transaction(session) as work:
        audit.record(session, agent="alice", action="account.unlock")
        work.after_commit(lambda: seen.append(_audit_actions(engine)))
        assert seen == []  # not before the commit
    assert seen == [["account.unlock"]]


def test_an_error_rolls_back_the_work_and_skips_the_hooks(engine: Engine) -> None:
    hooks: list[str] = []
    with Session(engine) as session, pytest.raises(Conflict), transaction(session) as work:
        audit.record(session, agent="alice", action="account.unlock")
        work.after_commit(lambda: hooks.append("ran"))
        raise Conflict("changed meanwhile")
    assert _audit_actions(engine) == [] and hooks == []


def test_an_inner_transaction_joins_the_outer_one(engine: Engine) -> None:
    """A service called by another never commits its caller's work on its own."""
    with Session(engine) as session, pytest.raises(Conflict), transaction(session):
        audit.record(session, agent="alice", action="account.unlock")
        with transaction(session):
            audit.record(session, agent="alice", action="pin.reset")
        assert _audit_actions(engine) == []  # the inner block committed nothing
        raise Conflict("the caller fails afterwards")
    assert _audit_actions(engine) == []


def test_domain_words_are_stored_as_the_plain_strings_scripts_read(
    engine: Engine, session: Session
) -> None:
    """The vocabulary's enums reach the database as their values, on both engines."""
    member = make_member(session)  # an active member with a welcome letter queued
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT m.status, l.status, l.kind, l.purpose FROM member m "
                "JOIN letter l ON l.member_id = m.id WHERE m.id = :id"
            ),
            {"id": member.id},
        ).one()
    assert tuple(row) == ("active", "pending", "welcome", "first_login")
    assert all(type(value) is str for value in row)


def test_members_of_an_older_schema_migrate_unchanged(engine: Engine) -> None:
    """0005 (the AFNOR lines as fields) and 0006 (the search index) keep every member as it
    was, new fields empty."""
    migrate(engine, "0004", down=True)
    old = {
        "nir": "285057800608434", "civility": "MME", "last_name": "Martin",
        "first_name": "Élodie", "street": "12 rue des Lilas", "address_complement": "Bât. B",
        "postcode": "75011", "city": "Paris", "country": "FR", "search_text": "martin",
        "status": "active", "created_at": "2026-01-01 00:00:00",
        "updated_at": "2026-01-01 00:00:00",
    }  # fmt: skip
    columns = ", ".join(old)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO member ({columns}) VALUES (:{', :'.join(old)})"), old)
    migrate(engine, "head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM member")).mappings().one()
    kept = [name for name in old if not name.endswith("_at") and name != "search_text"]
    assert {name: row[name] for name in kept} == {name: old[name] for name in kept}
    assert "elodie" in row["search_text"]  # 0006 recomputes the search columns
    assert (row["address_building"], row["locality"], row["envelope_name"]) == (None, None, None)


def _member_indexes(engine: Engine) -> dict[str, str]:
    """The member table's indexes, by name, with the SQL that made each (its condition)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = (
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'member'"
            )
        else:
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'member'"
        return {name: str(sql) for name, sql in conn.execute(text(query)).all()}


def test_0014_indexes_only_the_closed_members_by_name_and_its_downgrade_puts_back_both(
    engine: Engine, session: Session
) -> None:
    active = make_member(session, last_name="Martin")
    closed = make_member(session, last_name="Durand")
    records.close_member(session, nir=closed.nir, reason="départ", agent="alice")
    migrate(engine, "0013", down=True)
    assert "ix_member_status_sort_name" in _member_indexes(engine)
    assert "ix_member_closed_sort_name" not in _member_indexes(engine)
    migrate(engine, "head")
    indexes = _member_indexes(engine)
    assert "ix_member_status_sort_name" not in indexes
    condition = indexes["ix_member_closed_sort_name"]  # partial: closed, not pseudonymised
    assert "'closed'" in condition and "pseudonymised_at IS NULL" in condition, condition
    session.expire_all()
    assert [m.id for m in views.list_members(session, status="closed")] == [closed.id]
    assert [m.id for m in views.list_members(session, status="active")] == [active.id]


def test_0018_tags_the_unknown_nirs_counters_with_the_current_pepper_and_back(
    engine: Engine, session: Session
) -> None:
    """0018 widens the key of an unknown NIR's counters for its pepper's tag, and tags the
    keys made so far with the current pepper's; going back takes the tag off. The counters
    stay either way, locks included."""
    digest = "a" * 64
    session.add(PepperKey(id=2, fingerprint="f" * 64))  # a rotation, as recorded
    session.add(UnknownLogin(subject=f"k2${digest}", failed_attempts=10, captcha_required=True))
    session.commit()
    session.close()

    def counters() -> list[tuple[str, int]]:
        with engine.connect() as conn:
            query = "SELECT subject, failed_attempts FROM unknown_login"
            return [(row[0], row[1]) for row in conn.execute(text(query))]

    migrate(engine, "0017", down=True)
    assert counters() == [(digest, 10)]  # as 0017 keyed the current pepper's
    migrate(engine, "head")
    assert counters() == [(f"k2${digest}", 10)]


def test_0019_keeps_revoked_codes_revoked_and_their_reason_goes_with_its_downgrade(
    cli: Cli, engine: Engine, session: Session
) -> None:
    member = make_member(session)
    assert cli("code", "issue", member.nir, "--reason", "phone").exit_code == 0
    assert cli("member", "update", member.nir, "--email", "new@example.org").exit_code == 0
    session.close()

    def codes() -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text("SELECT * FROM security_code"))]

    [before] = codes()
    assert "revoked" in before and "email_changed" in before
    migrate(engine, "0018", down=True)
    [down] = codes()
    assert "revoked" in down and "email_changed" not in down
    migrate(engine, "head")
    [up] = codes()
    assert up == tuple(None if value == "email_changed" else value for value in before)


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: set CPMS_TEST_DATABASE_URL")
def test_two_upgrades_of_a_new_postgresql_database_at_once_both_finish(tmp_path: Path) -> None:
    """The second waits for the first (one upgrade at a time), then finds the schema made:
    both exit 0. Before, the second failed half-way on the catalog with a raw database
    error."""
    with new_pg_database() as url:
        env = {
            **os.environ,
            "CPMS_DATABASE_URL": url,
            "CPMS_PEPPER_FILE": str(tmp_path / "pepper"),
            "CPMS_AGENT": "installer",
        }
        command = ["db", "upgrade"]
        flag = tmp_path / "held"
        first = start_held(command, env=env, point="upgrade.locked", flag=flag)
        second = cli_popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        engine = make_engine(url)
        try:
            with Session(engine) as session:
                wait_until(lambda: waiting_for_a_lock(session), what="the second upgrade")
        finally:
            engine.dispose()
        flag.unlink()
        outputs = [process.communicate(timeout=120) for process in (first, second)]
        assert [process.returncode for process in (first, second)] == [0, 0], outputs
        assert "Schema upgraded from empty" in outputs[0][0] + outputs[0][1]


def test_upgrades_of_a_new_sqlite_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Each waits for SQLite's write lock and reads the revision under it: one migrates and
    records it, the others find the schema made (each said it upgraded it, and recorded a
    `db.upgrade` event, before)."""
    env = {
        **os.environ,
        "CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}",
        "CPMS_PEPPER_FILE": str(tmp_path / "pepper"),
    }
    upgrades = [
        cli_popen(
            ["db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [upgrade.communicate(timeout=120) for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0] * 4, outputs
    said = sorted(stdout.splitlines()[0] for stdout, _ in outputs)
    assert said == ["Schema already at the latest revision."] * 3 + [
        f"Schema upgraded from empty to {HEAD_REVISION}."
    ], outputs
    listed = cli_run(
        ["--json", "audit", "list", "--action", "db.upgrade"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(json.loads(listed.stdout)) == 1


def test_a_pepper_file_the_upgrade_cannot_use_stops_it_before_the_schema(
    tmp_path: Path,
) -> None:
    """Refused for its mode before anything is made: migrated first, the schema stayed done
    and the upgrade, run again once the file was fixed, recorded no `db.upgrade` event."""
    pepper = tmp_path / "pepper"
    pepper.write_text("1:" + "ab" * 32 + "\n")
    pepper.chmod(0o644)  # others may read it: no secret
    env = {
        **os.environ,
        "CPMS_DATABASE_URL": f"sqlite:///{tmp_path / 'cpms.db'}",
        "CPMS_PEPPER_FILE": str(pepper),
    }
    refused = cli_run(["db", "upgrade"], env=env, capture_output=True, text=True)
    assert refused.returncode == 5, refused.stderr
    assert str(pepper) in refused.stderr
    assert not (tmp_path / "cpms.db").exists()  # not even an empty database
