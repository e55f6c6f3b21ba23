"""Shared fixtures: a fresh real database per test (SQLite, and PostgreSQL when
CPMS_TEST_DATABASE_URL is set), settings, a CLI runner and a movable clock."""

import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from cpms_admin.agents.grants import groups_of
from cpms_admin.db import make_engine, normalise_url, upgrade_schema
from cpms_admin.pepper import fingerprint
from cpms_admin.settings import Settings
from tests.harness import TEST_PEPPER, Cli, FakeClock, new_chain, own_engine

PG_URL = os.environ.get("CPMS_TEST_DATABASE_URL")
ENGINES = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
# The suite's process collects its youngest garbage every 20,000 allocations rather than
# Python's 700 (not the import's own 50,000, which a test checks is put back).
SUITE_ALLOCATIONS_PER_COLLECTION = 20_000


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported lives to the end: out of the collector's sight, and the tests'
    many short-lived ORM objects collected less often, about a tenth of this process's CPU
    (the installed command freezes what its imports made too: cpms_admin.cli.main)."""
    gc.freeze()
    gc.set_threshold(SUITE_ALLOCATIONS_PER_COLLECTION, *gc.get_threshold()[1:])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One upgraded SQLite file, copied for each test (faster than migrating every time)."""
    path = tmp_path_factory.mktemp("template") / "cpms.db"
    engine = make_engine(f"sqlite:///{path}", must_exist=False)
    upgrade_schema(engine)
    record_test_pepper(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name("cpms.db-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, dropped at the end."""
    with new_pg_database() as url:
        engine = make_engine(url)
        upgrade_schema(engine)
        engine.dispose()
        yield url


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database: its URL. Dropped afterwards with its group roles,
    which are the cluster's (agents/grants.py)."""
    assert PG_URL
    admin_url = make_url(normalise_url(PG_URL))
    name = f"cpms_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for group in groups_of(name).values():
                conn.execute(text(f'DROP ROLE IF EXISTS "{group}"'))
        admin.dispose()


def record_test_pepper(engine: Engine) -> None:
    """What `db upgrade` records of the pepper: the test databases are TEST_PEPPER's."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO pepper_key (id, fingerprint, created_at) VALUES (1, :f, :at)"),
            {"f": fingerprint(TEST_PEPPER.encode()), "at": datetime(2026, 1, 1, tzinfo=UTC)},
        )


def _empty_all(url: str) -> None:
    """Every table emptied and every id sequence restarted, as in a new database. DELETE in
    one transaction takes a few milliseconds; TRUNCATE of the dozen tables took a quarter of
    a second of the server's time for every test."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):  # children first
            conn.execute(table.delete())
        sequences = conn.execute(
            text("SELECT sequence_schema, sequence_name FROM information_schema.sequences")
        ).all()
        for schema, name in sequences:
            conn.execute(text(f'ALTER SEQUENCE "{schema}"."{name}" RESTART'))
        # As a new database: the one who made it (here the test's login role) is its admin.
        conn.execute(
            text(
                "INSERT INTO agent (name, role, added_at, added_by) "
                "VALUES (session_user, 'admin', :at, session_user)"
            ),
            {"at": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    record_test_pepper(engine)
    with engine.begin() as conn:
        new_chain(conn)
    engine.dispose()


def _fresh_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if engine == "sqlite":
        path = tmp_path / "cpms.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _empty_all(url)
    return url


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _fresh_url(request.param, request, tmp_path)


@pytest.fixture
def both_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A fresh database on SQLite and one on PostgreSQL, for tests that compare the two;
    skipped when PostgreSQL is not configured."""
    if not PG_URL:
        pytest.skip("compares SQLite with PostgreSQL: set CPMS_TEST_DATABASE_URL")
    return _fresh_url("sqlite", request, tmp_path), _fresh_url("postgresql", request, tmp_path)


@pytest.fixture(params=ENGINES)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (a new SQLite file, a new PostgreSQL database), for
    tests that run the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"  # make_engine(must_exist=False) makes it
        return
    with new_pg_database() as url:
        yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        pepper=TEST_PEPPER,
        mail_dir=str(tmp_path / "outbox"),
        audit_archive_dir=str(tmp_path / "audit-archive"),
    )


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The test's own engine. Deferred transactions on SQLite, so a test that reads between
    two CLI calls does not hold the write lock the next command needs. Its sessions seal the
    audit events they write with the test pepper, as the CLI's do."""
    engine = own_engine(db_url)
    yield engine.execution_options(sqlite_begin="DEFERRED")
    engine.dispose()


class _TestSession(Session):
    """The test's session. `rollback()` is how a test reads what the commands it ran have
    committed (in sessions of their own): it also expires what the session holds when no
    transaction was open, which a plain rollback leaves as it was read, so the next read is
    the database's, not an object kept alive until the collector's next pass."""

    def rollback(self) -> None:
        super().rollback()
        self.expire_all()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with _TestSession(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cli(settings: Settings, clock: FakeClock) -> Cli:
    return Cli(settings, clock)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    from tests.mail_helpers import make_certificate  # only the TLS tests pay for the import

    return make_certificate(tmp_path_factory.mktemp("tls"))
