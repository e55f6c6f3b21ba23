"""The test databases: a new PostgreSQL database, one emptied as if new, and the pepper
fingerprint `db upgrade` would have recorded (the fixtures of conftest.py are made of these)."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from cpms_admin.agents.grants import groups_of
from cpms_admin.db import make_engine, normalise_url
from cpms_admin.pepper import fingerprint
from tests.harness import TEST_PEPPER, new_chain

PG_URL = os.environ.get("CPMS_TEST_DATABASE_URL")


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


def empty_all(url: str) -> None:
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


@contextmanager
def created_login(url: str) -> Iterator[str]:
    """A PostgreSQL login role of the test's own, dropped afterwards (roles are the
    cluster's, not a database's)."""
    name = f"cpms_t_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {name} LOGIN"))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()
