"""Shared fixtures: a fresh real database per test (SQLite, and PostgreSQL when
CPMS_TEST_DATABASE_URL is set), settings, a CLI runner and a movable clock."""

import gc
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin.db import make_engine, upgrade_schema
from cpms_admin.settings import Settings
from tests.databases import PG_URL, created_login, empty_all, new_pg_database, record_test_pepper
from tests.harness import TEST_PEPPER, Cli, FakeClock, own_engine

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


@pytest.fixture(scope="session")
def sqlite_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each test's SQLite database is: one folder made anew for every test, at the
    same path, so that the process's engine for that URL (`db.make_engine`) serves them all
    and the statements its commands compile are compiled once a session, not once a test
    (about a quarter of this process's CPU)."""
    return tmp_path_factory.mktemp("sqlite") / "db"


def _fresh_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if engine == "sqlite":
        folder: Path = request.getfixturevalue("sqlite_home")
        path = folder / "cpms.db"
        url = f"sqlite:///{path}"
        if folder.exists():
            make_engine(url, must_exist=False).dispose()  # no connection to the last test's
            shutil.rmtree(folder)
        folder.mkdir()
        shutil.copy(request.getfixturevalue("sqlite_template"), path)  # owner-only, as made
        return url
    url: str = request.getfixturevalue("pg_database")
    empty_all(url)
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


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh PostgreSQL database, for tests of what only PostgreSQL does (its roles);
    skipped when PostgreSQL is not configured."""
    if not PG_URL:
        pytest.skip("needs PostgreSQL: set CPMS_TEST_DATABASE_URL")
    return _fresh_url("postgresql", request, tmp_path)


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


@pytest.fixture
def new_login(db_url: str) -> Iterator[str]:
    """A name that can become an agent: on PostgreSQL a login role must exist (a DBA's)."""
    if db_url.startswith("sqlite"):
        yield f"cpms_t_{uuid.uuid4().hex[:8]}"
        return
    with created_login(db_url) as name:
        yield name
