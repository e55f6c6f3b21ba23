"""Building bench/scale.py's databases (rows from scale_data.py), and keeping them between runs.

Each database is made as an agent makes one: `cpms-admin db upgrade` (which makes whoever runs
it admin and records the bench's pepper), then the rows are bulk-loaded: on SQLite one Core
executemany per batch of 20,000 rows in big transactions, on PostgreSQL `COPY`. Secondary
indexes (and on SQLite the search index's triggers) are dropped first and made again after the
load, as their own `CREATE` statements read back from the database: the schema's objects, only
built once instead of row by row. The folded columns (`search_text`, `sort_name`) are computed
by `members.search.search_values`, and the search index is filled from them (FTS5's `rebuild`
on SQLite, the GIN index's creation on PostgreSQL), as migration 0006 does.

The audit events are sealed into the chain by its own code (`audit_chain.seal.extend` on
SQLite; on PostgreSQL the same steps around a COPY: the locked head, each event's canonical
form and keyed hash, the head advanced and sealed): `audit verify` passes on these databases.

PostgreSQL loads with `session_replication_role = replica` (no foreign-key triggers: the rows
are made consistent) and ends with `VACUUM ANALYZE`, as autovacuum would leave a database that
has settled. SQLite gets no ANALYZE: cpms-admin never runs one, so its planner works without
statistics in production, and so it does here.

Databases are kept under the temporary folder (`cpms-scale/`) or on the server
(`cpms_scale_<N>_r<revision>_<digest>`), named by size, schema revision and a digest of the
migrations and scale_data.py; a JSON file beside says the build finished. Building one drops
the others of the same size (older code's).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scale_data import Maker, Plan, Row
from sqlalchemy import Connection, Engine, create_engine, event, insert, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from cpms_admin.audit_chain import keyed
from cpms_admin.audit_chain.form import EVENTS, Keyring, canonical
from cpms_admin.audit_chain.seal import advance, extend, locked_head
from cpms_admin.db import make_engine, normalise_url
from cpms_admin.members.search import FTS_TABLE
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.pepper import parse_peppers

PEPPER = "scale-bench-pepper"
CACHE = Path(tempfile.gettempdir()) / "cpms-scale"
HERE = Path(__file__).resolve().parent
MIGRATIONS = HERE.parent / "cpms_admin" / "migrations" / "versions"
CLI = str(Path(sys.executable).parent / "cpms-admin")
LOADED = ("member", "account", "letter_batch", "letter", "security_code", "audit_event")
TABLES = SQLModel.metadata.tables


@dataclass(frozen=True)
class Built:
    """A database ready to measure, and what the timed commands ask it about."""

    engine: str  # "sqlite" | "postgresql"
    url: str
    members: int
    events: int
    probe_nir: str
    pending_first: int  # tonight's queue: letter ids pending_first..pending_last
    pending_last: int
    batches: int  # letter_batch ids up to this one are the history's
    seconds: float  # how long the build took (0 when it came from the cache)

    def env(self) -> dict[str, str]:
        """The environment a cpms-admin command needs for this database."""
        env = {**os.environ, "CPMS_DATABASE_URL": self.url, "CPMS_PEPPER": PEPPER}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def open(self) -> Engine:
        """An engine whose sessions seal their audit events with the bench's pepper."""
        return keyed(make_engine(self.url), parse_peppers(PEPPER, "CPMS_PEPPER"))


def name(members: int) -> str:
    """The database's name: its size, the schema revision and a digest of what made it (the
    migrations and scale_data.py), so that a change to either builds it anew."""
    digest = hashlib.sha256()
    for source in [*sorted(MIGRATIONS.glob("*.py")), HERE / "scale_data.py"]:
        digest.update(source.read_bytes())
    return f"cpms_scale_{members}_r{HEAD_REVISION}_{digest.hexdigest()[:8]}"


def database(engine: str, members: int, server: str | None) -> Built:
    """The database of `members` members on `engine`: from the cache, or built now."""
    CACHE.mkdir(mode=0o700, exist_ok=True)
    marker = CACHE / f"{engine}-{name(members)}.json"
    if engine == "sqlite":
        path = CACHE / f"{name(members)}.db"
        url = f"sqlite:///{path}"
        exists = path.exists()
    else:
        assert server is not None, "PostgreSQL needs a server URL"
        url = make_url(normalise_url(server)).set(database=name(members))
        url = url.render_as_string(hide_password=False)
        exists = pg_exists(server, name(members))
    if exists and marker.exists():
        return Built(**{**json.loads(marker.read_text()), "url": url, "seconds": 0.0})
    _drop_size(engine, members, server)  # this one half-built, or made by older code
    print(f"building {engine} database of {members:,} members ... ", end="", flush=True)
    started = time.perf_counter()
    if engine == "postgresql":
        pg_recreate(server or "", name(members))
    built = _build(engine, url, Plan(members))
    built = Built(**{**asdict(built), "seconds": time.perf_counter() - started})
    print(f"{built.seconds:.0f} s")
    marker.write_text(json.dumps({k: v for k, v in asdict(built).items() if k != "url"}))
    return built


def _drop_size(engine: str, members: int, server: str | None) -> None:
    """Every kept database of `members` members on `engine` (a million takes gigabytes)."""
    for marker in CACHE.glob(f"{engine}-cpms_scale_{members}_*.json"):
        marker.unlink()
    if engine == "sqlite":
        for path in CACHE.glob(f"cpms_scale_{members}_*"):
            path.unlink()
        return
    admin = create_engine(make_url(normalise_url(server or "")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pattern = f"cpms\\_scale\\_{members}\\_%"
        query = text("SELECT datname FROM pg_database WHERE datname LIKE :pattern")
        for found in list(conn.execute(query, {"pattern": pattern}).scalars()):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{found}" WITH (FORCE)'))
    admin.dispose()


def drop_cached(server: str | None) -> None:
    """Every database kept by earlier runs (--rebuild)."""
    for marker in CACHE.glob("*.json"):
        marker.unlink()
    for path in CACHE.glob("cpms_scale_*"):
        path.unlink()
    if server:
        admin = create_engine(make_url(normalise_url(server)), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            names = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'cpms\\_scale\\_%'")
            ).scalars()
            for found in list(names):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{found}" WITH (FORCE)'))
        admin.dispose()


def pg_exists(server: str, database: str) -> bool:
    admin = create_engine(make_url(normalise_url(server)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        query = text("SELECT 1 FROM pg_database WHERE datname = :name")
        found = conn.execute(query, {"name": database}).first() is not None
    admin.dispose()
    return found


def pg_recreate(server: str, database: str, template: str | None = None) -> None:
    admin = create_engine(make_url(normalise_url(server)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        from_template = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{database}"{from_template}'))
    admin.dispose()


def upgrade(url: str) -> None:
    """`cpms-admin db upgrade`, as its first admin would run it."""
    env = {**os.environ, "CPMS_DATABASE_URL": url, "CPMS_PEPPER": PEPPER}
    command = [CLI, "db", "upgrade", "--create-dirs"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"db upgrade failed: {done.stderr}")


def _build(kind: str, url: str, plan: Plan) -> Built:
    upgrade(url)
    maker = Maker(plan)
    engine = make_engine(url)
    keys = Keyring(parse_peppers(PEPPER, "CPMS_PEPPER"))
    loader = SqliteLoader(engine) if kind == "sqlite" else PostgresLoader(engine)
    probe = ""
    with loader.without_indexes():
        for members, accounts in maker.members():
            probe = probe or members[0]["nir"]
            loader.load("member", members)
            loader.load("account", accounts)
        batches = 0
        for made_batches, letters, codes in maker.history():
            batches += len(made_batches)
            loader.load("letter_batch", made_batches)
            loader.load("letter", letters)
            loader.load("security_code", codes)
        pending, codes = maker.pending()
        loader.load("letter", pending)
        loader.load("security_code", codes)
        with engine.connect() as conn:
            first_id = conn.execute(text("SELECT max(id) FROM audit_event")).scalar_one() + 1
        events = 0
        for rows in maker.events(first_id):
            loader.seal(keys, rows)
            events += len(rows)
    loader.finish()
    engine.dispose()
    return Built(
        engine=kind,
        url=url,
        members=plan.members,
        events=events,
        probe_nir=probe,
        pending_first=pending[0]["id"],
        pending_last=pending[-1]["id"],
        batches=batches,
        seconds=0.0,
    )


class SqliteLoader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

        @event.listens_for(engine, "connect")
        def tune(dbapi_conn: Any, _record: Any) -> None:  # after make_engine's own settings
            dbapi_conn.execute("PRAGMA synchronous = OFF")
            dbapi_conn.execute("PRAGMA cache_size = -1000000")  # 1 GB

    def _tuned(self, conn: Connection) -> Connection:
        return conn

    def without_indexes(self) -> "_Dropped":
        query = (
            "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT "
            f"NULL AND tbl_name IN ({', '.join(repr(t) for t in LOADED)}) ORDER BY type"
        )
        with self.engine.begin() as conn:
            made = [row[0] for row in conn.exec_driver_sql(query)]
            names = conn.exec_driver_sql(query.replace("SELECT sql", "SELECT type, name")).all()
            for kind, object_name in names:
                conn.exec_driver_sql(f"DROP {kind} {object_name}")
        return _Dropped(self, made)

    def remake(self, statements: list[str]) -> None:
        with self.engine.begin() as conn:
            self._tuned(conn)
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')")

    def load(self, table: str, rows: list[Row]) -> None:
        if rows:
            with self.engine.begin() as conn:
                self._tuned(conn).execute(insert(TABLES[table]), rows)

    def seal(self, keys: Keyring, rows: list[Row]) -> None:
        with self.engine.begin() as conn:
            extend(self._tuned(conn), keys, rows)

    def finish(self) -> None:
        """Nothing: the last connection to close (engine.dispose) checkpoints the WAL."""


class PostgresLoader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _tuned(self, conn: Connection) -> Connection:
        conn.exec_driver_sql("SET session_replication_role = replica")  # no FK triggers
        conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
        return conn

    def without_indexes(self) -> "_Dropped":
        query = text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = ANY(:tables) AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        with self.engine.begin() as conn:
            found = conn.execute(query, {"tables": list(LOADED)}).all()
            for index_name, _ in found:
                conn.exec_driver_sql(f'DROP INDEX "{index_name}"')
        return _Dropped(self, [definition for _, definition in found])

    def remake(self, statements: list[str]) -> None:
        with self.engine.begin() as conn:
            self._tuned(conn)
            for statement in statements:
                conn.exec_driver_sql(statement)
            for table in LOADED:
                if "id" in TABLES[table].c:  # the loaded ids were not taken from the sequence
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) "
                        f"FROM {table}"
                    )

    def load(self, table: str, rows: list[Row]) -> None:
        if rows:
            with self.engine.begin() as conn:
                self._copy(self._tuned(conn), table, rows)

    def _copy(self, conn: Connection, table: str, rows: Iterable[Row]) -> None:
        columns = [column.name for column in TABLES[table].columns]
        raw: Any = conn.connection.driver_connection
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row.get(column) for column in columns])

    def seal(self, keys: Keyring, rows: list[Row]) -> None:
        """`extend`'s steps, the rows written by COPY."""
        with self.engine.begin() as conn:
            head = locked_head(self._tuned(conn), keys)
            key_id, seq, previous = keys.current_id, head["seq"], head["hash"]
            empty = dict.fromkeys(column.name for column in EVENTS.columns)
            sealed = []
            for row in rows:
                seq += 1
                event = {**empty, **row, "seq": seq, "prev_hash": previous, "key_id": key_id}
                previous = event["hash"] = keys.event_hash(key_id, canonical(event))
                sealed.append(event)
            self._copy(conn, "audit_event", sealed)
            head.update(seq=seq, hash=previous)
            advance(conn, keys, head)

    def finish(self) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


class _Dropped:
    """`with loader.without_indexes():` the load, then the indexes made again."""

    def __init__(self, loader: SqliteLoader | PostgresLoader, statements: list[str]) -> None:
        self.loader, self.statements = loader, statements

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.loader.remake(self.statements)
