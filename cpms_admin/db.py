"""Engines, sessions, the schema version, and one bulk insert. Nothing connects until asked to.

SQLite is tuned so an agent and the cron can work at once: WAL, foreign keys, a busy
timeout, and every transaction opened with BEGIN IMMEDIATE so a read-then-write
transaction waits for the write lock instead of failing half-way. Commands that only look
use `session_scope(engine, read_only=True)` instead (see `reader`): in WAL mode a DEFERRED
transaction never waits for a writer, so `member show` answers during the nightly batch.
"""

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, SQLModel, col

from cpms_admin.errors import Conflict, CpmsError, InvalidInput, NotReady, Refused
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.private_files import (
    CAMPAIGN_LOCK,
    MAIL_LOCK,
    PEPPER_LOCK,
    PURGE_LOCK,
    create_private_file,
    hold_run_lock,
    run_lock_file,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run cpms-admin db upgrade"
# The first key of every advisory lock this program takes on PostgreSQL ("CPMS"): keeps its
# locks (a letter batch's, and those of `one_run`) apart from any other application's.
ADVISORY_CLASS = 0x43504D53


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them through psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(normalise_url(url)).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other engines and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


@dataclass(frozen=True)
class RunLock:
    """A job that only one run at a time may do (`one_run`): its lock file beside a SQLite
    database (`private_files.COMPANIONS`), its advisory lock on PostgreSQL, and what a second
    run is told."""

    suffix: str
    advisory_id: int  # see IMPORT_LOCK_ID
    busy: str


# The second keys of this program's advisory locks on PostgreSQL, each job's own: a letter
# batch's is its id (positive); the others are here, negative, so that no two jobs share one.
IMPORT_LOCK_ID = -2  # each writing batch of an import (bulk/import_writes.py)
UPGRADE_LOCK_ID = -3  # `db upgrade` (operations/schema.py)
MAIL_RUN = RunLock(MAIL_LOCK, -1, "another mail send is running")
PURGE_RUN = RunLock(PURGE_LOCK, -4, "another purge is running")
CAMPAIGN_RUN = RunLock(CAMPAIGN_LOCK, -5, "another code campaign is running")
PEPPER_RUN = RunLock(PEPPER_LOCK, -6, "another pepper rotate is running")


@contextmanager
def one_run(session: Session, lock: RunLock) -> Iterator[None]:
    """Hold `lock` for the block (Conflict with `lock.busy` when another run holds it): a
    flock on `<db>` + `lock.suffix` on SQLite, a session advisory lock on PostgreSQL. Both
    die with the process, so a killed run never blocks the next."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            key = {"class": ADVISORY_CLASS, "id": lock.advisory_id}
            if not conn.execute(text("SELECT pg_try_advisory_lock(:class, :id)"), key).scalar():
                raise Conflict(lock.busy)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:class, :id)"), key)
        return
    database = sqlite_path(engine.url.render_as_string(hide_password=False))
    if database is None:  # in memory: nobody else sees it
        yield
        return
    fd = hold_run_lock(run_lock_file(database, lock.suffix), like=database, busy=lock.busy)
    try:
        yield
    finally:
        os.close(fd)  # releases the flock


BUSY_TIMEOUT_MS = 30_000
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
    # Deleted content zeroed, not left in free pages (Debian builds SQLite so; others may not).
    "PRAGMA secure_delete = ON",
    # Ceilings a bulk command at a million members reaches and a look-up does not: a
    # page cache of 64 MiB (SQLite's default is 2) keeps the member indexes' inner pages in
    # memory, and a checkpoint every 16,000 pages of WAL (64 MiB, not 4) syncs the database
    # file a sixteenth as often (its file stays 64 MiB on disk until the last connection
    # closes). A million-row import: 56 s -> 48 s in alternate runs (bench/scale_bulk.py).
    "PRAGMA cache_size = -65536",
    "PRAGMA wal_autocheckpoint = 16000",
)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


# One engine per database URL and process, as SQLAlchemy advises: it compiles each statement
# once for every session of the process (its cache is the engine's), where a command's context,
# its pepper check and `doctor` each made an engine and compiled the same statements again.
_ENGINES: dict[str, Engine] = {}
# A forked child starts without them, as a connection must not cross a fork; it keeps them
# alive all the same, for the collector would close the parent's SQLite connections in it
# (and a close may checkpoint and delete the WAL the parent is using).
_FORKED_AWAY: list[Engine] = []


def _forget_engines_in_child() -> None:
    _FORKED_AWAY.extend(_ENGINES.values())
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


def make_engine(url: str, *, must_exist: bool = True, create_dirs: bool = False) -> Engine:
    """The engine for `url`, made on first use. A missing SQLite file is NotReady unless
    `must_exist` is off; so is a missing folder for it, unless `create_dirs` (a typo must not
    make one). Who is done with it calls `release`."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(f"not a database URL: {url!r}") from None
    path = sqlite_path(url)
    if path is not None:
        if parsed.query:  # `?mode=ro&uri=true` made SQLite open, and create, `cpms.db?mode=ro`
            raise InvalidInput(
                f"SQLite database URL with options ({', '.join(parsed.query)}): give the "
                "file's path alone, e.g. sqlite:////srv/cpms/cpms.db"
            )
        try:
            exists, folder = path.exists(), path.parent.is_dir()
        except PermissionError:
            raise NotReady(
                f"database {path}: permission denied on its folder; this user must be able to "
                "open it (README, Deploying: the database's group)"
            ) from None
        if must_exist and not exists:
            raise NotReady(f"database {path} does not exist; {UPGRADE_HINT}")
        if not folder:
            if not create_dirs:
                raise NotReady(
                    f"folder {path.parent} does not exist: check the database URL, or run "
                    "cpms-admin db upgrade --create-dirs"
                )
            path.parent.mkdir(mode=0o700, parents=True)
        if not exists:
            create_private_file(path)
    key = _engine_key(url, path)
    engine = _ENGINES.get(key) if key else None
    if engine is None:
        engine = _new_engine(url, parsed.drivername, sqlite=path is not None)
        if key:
            _ENGINES[key] = engine
    return engine


def _engine_key(url: str, path: Path | None) -> str | None:
    """The database `url` names: a relative SQLite path names a file of the current directory
    (None, an engine of its own, when there is none)."""
    if path is None or path.is_absolute():
        return url
    try:
        return f"{url} in {os.getcwd()}"
    except OSError:
        return None


def release(engine: Engine) -> None:
    """Close `engine`'s pooled connections, its user being done with it; the engine stays the
    process's. Nothing is closed while another part of the process holds one of its
    connections (a command's transaction, while it reads the pepper's fingerprints): a dispose
    then would leave that connection, once given back, open in a pool no longer the engine's
    until the collector found it (a PostgreSQL session, a handle on the SQLite file); the
    release of the last user closes them all."""
    pool = engine.pool
    if not isinstance(pool, QueuePool) or pool.checkedout() == 0:
        engine.dispose()


def _new_engine(url: str, driver: str, *, sqlite: bool) -> Engine:
    if sqlite:
        engine = create_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise InvalidInput(f"cannot use database URL for {driver}: {exc}") from None


def current_revision(engine: Engine) -> str | None:
    """The schema revision stamped in the database, None when it was never upgraded."""
    try:
        with reader(engine).connect() as conn:  # every command asks: it must never wait
            return _stamped(conn)
    except DBAPIError as exc:
        raise database_failure(exc, doing="cannot open the database") from None


def _stamped(conn: Connection) -> str | None:
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_schema(engine: Engine) -> None:
    revision = current_revision(engine)
    if revision != HEAD_REVISION:
        what, fix = schema_behind(revision)
        raise NotReady(f"database schema is {what}; {fix}")


def schema_behind(revision: str | None) -> tuple[str, str]:
    """What is wrong with a schema at `revision` (not the latest), and what to do. A schema
    newer than this release knows was upgraded by a newer cpms-admin: `db upgrade` cannot
    bring it back, the newer release must be installed."""
    if revision is None:
        return "empty", UPGRADE_HINT
    if revision > HEAD_REVISION:  # revisions are numbered 0001, 0002...
        return (
            f"at {revision}, newer than this cpms-admin knows (its latest is {HEAD_REVISION})",
            "install the cpms-admin release that upgraded it",
        )
    return f"at {revision}, latest is {HEAD_REVISION}", UPGRADE_HINT


def upgrade_schema(engine: Engine) -> str | None:
    """Bring the schema to the latest revision (idempotent), in one transaction; the revision
    it was at, read in that transaction: of upgrades run at once, one migrates and the others
    find it done (SQLite's write lock, taken at BEGIN; on PostgreSQL, the caller's lock)."""
    return migrate(engine, "head")


def migrate(engine: Engine, revision: str, *, down: bool = False) -> str | None:
    """Run the migrations up (or `down`) to `revision` in one transaction; the revision the
    schema was at. On SQLite, foreign keys are not enforced while migrating: a table rebuilt
    by batch mode is dropped while other tables' rows point at it (the rows are kept:
    SQLite's own advice). They are checked before the commit instead."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn, _foreign_keys_unenforced(conn), conn.begin():
            before = _stamped(conn)
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
            if sqlite and _stamped(conn) != before:
                _refuse_dangling_rows(conn)
    except DBAPIError as exc:
        raise database_failure(exc, doing="cannot upgrade the database") from None
    return before


CHECKPOINT_WAIT_MS = 2_000  # not the commands' 30 s: the checkpoint can wait for the next


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the write-ahead log into the database file and empty it, so that what a
    run overwrote (purge: the pseudonymised members' data) leaves both files now, not at the
    next automatic checkpoint (every 64 MiB). A reader in a transaction holds it back: it
    waits for it a moment (CHECKPOINT_WAIT_MS), then copies what it can. Other engines:
    nothing."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


@contextmanager
def _foreign_keys_unenforced(conn: Connection) -> Iterator[None]:
    """SQLite: foreign keys off for the block (outside any transaction: SQLite ignores the
    pragma inside one); other engines: nothing."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def _refuse_dangling_rows(conn: Connection) -> None:
    """NotReady, so the migration rolls back, if a row points at a row that is not there."""
    dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
    if dangling is not None:
        table, rowid, parent, _ = dangling
        raise NotReady(
            f"cannot upgrade the database: row {rowid} of {table} points at a row of {parent} "
            "that does not exist (sqlite3's PRAGMA foreign_key_check lists them all); nothing "
            "was changed"
        )


def describe_db_error(exc: DBAPIError) -> str:
    """One line from a driver error, without SQL or parameters."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__


def database_failure(exc: DBAPIError, *, doing: str = "database error") -> CpmsError:
    """What a driver error tells the user. PostgreSQL refusing the login role a privilege
    (SQLSTATE 42501: an admin disabled the agent, or only the owner may do it) is a refusal,
    exit 1, unless it is the CREATEROLE the owner needs to upgrade; anything else means the
    database is not ready, exit 5."""
    what = describe_db_error(exc)
    if getattr(exc.orig, "sqlstate", None) == "42501" and "to create role" in str(exc.orig):
        # `db upgrade` makes the agents' group roles (agents/grants.py): a setup step missed
        return NotReady(
            f"{doing}: {what}: the database login may not create roles, which db upgrade does "
            "for the agents' groups; ALTER ROLE ... CREATEROLE for it (or run this upgrade "
            "once as a superuser), then run it again"
        )
    if getattr(exc.orig, "sqlstate", None) == "42501":
        return Refused(
            f"not allowed by the database: {what} "
            "(is this login role an enabled agent of this database? is the command the owner's?)"
        )
    return NotReady(f"{doing}: {what}")


def reader(engine: Engine) -> Engine:
    """`engine` for transactions that only read: DEFERRED on SQLite, so they read the last
    committed state at once instead of queueing behind another process's write; READ ONLY on
    PostgreSQL, so a write slipped into one fails loudly (reset when the connection is returned
    to the pool)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="DEFERRED")
    if engine.dialect.name == "postgresql":
        return engine.execution_options(postgresql_readonly=True)
    return engine


@contextmanager
def session_scope(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """A session whose uncommitted work is rolled back on exit: services write inside
    `transaction` blocks, which commit.

    `read_only` for commands that only look (see `reader`): they never wait for a writer.
    """
    with Session(reader(engine) if read_only else engine, expire_on_commit=False) as session:
        yield session


class Transaction:
    """One unit of work on a session; see `transaction`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[Callable[[], object]] = []

    def after_commit(self, hook: Callable[[], object]) -> None:
        """Run `hook` once the work is committed (send an e-mail, publish a file); never if
        it is rolled back. Hooks run in order; one that raises stops the others."""
        self._after_commit.append(hook)


_OPEN = "cpms_transaction"  # key of the open Transaction in Session.info


@contextmanager
def transaction(session: Session) -> Iterator[Transaction]:
    """The one way services commit: the block's work commits when it ends and rolls back
    on any error, then its after-commit hooks run. A block opened inside another joins it,
    so a service called by another never commits its caller's work."""
    joined = session.info.get(_OPEN)
    if isinstance(joined, Transaction):
        yield joined
        return
    work = Transaction(session)
    session.info[_OPEN] = work
    try:
        yield work
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_OPEN, None)
    for hook in work._after_commit:
        hook()


def check_committed(session: Session) -> None:
    """For what must follow a commit (an e-mail bearing a code): RuntimeError, a programming
    error, inside a `transaction` block, whose work is not committed yet and which a failure
    here would roll back."""
    if session.info.get(_OPEN) is not None:
        raise RuntimeError("this runs once the work is committed, not inside a transaction")


def insert_per_member(
    session: Session, table: Table, member_ids: Sequence[int], values: Mapping[str, Any]
) -> None:
    """One row of `table` for each member of `member_ids` (its `member_id`), all with the same
    `values`, in one INSERT ... SELECT: the common values are bound and converted once, where
    an executemany of one dict per member converts each row's (bench/campaign.py)."""
    if not member_ids:
        return
    member = SQLModel.metadata.tables["member"]
    constants = [literal(value, table.c[name].type) for name, value in values.items()]
    rows = select(member.c.id, *constants).where(member.c.id.in_(member_ids)).order_by(member.c.id)
    session.execute(insert(table).from_select(["member_id", *values], rows))


def unindexed(column: Any) -> ColumnElement[str]:
    """`column || ''`: the same value, but no index on `column` can serve a test of it.
    cpms-admin never runs ANALYZE, and without statistics SQLite answers `member_id = ? AND
    status = ?` (or a join on the member of a list of rows) through the status index, reading
    every row of that status for each member: a claim or a campaign at a million letters or
    codes turns quadratic. A status so tested leaves the member_id index to do the work, on
    both engines."""
    return col(column).concat("")


def stated(value: str) -> BindParameter[str]:
    """`value` written into the statement rather than sent beside it, for a partial index:
    it serves only the queries whose condition implies its own (`status = 'closed'` for
    `ix_member_closed_sort_name`). Written in, the value is there for any planner to see; a
    parameter's is seen by SQLite's only in some versions (3.40 re-prepares the statement
    with it), and never by a PostgreSQL generic plan (psycopg prepares a statement run five
    times). For values of a fixed vocabulary only."""
    return bindparam(None, value, type_=String, literal_execute=True)


# A cut listing counts its matches up to this many: beyond, "10,000+" tells an agent as much,
# and counting a million rows would cost more than the listing itself.
COUNT_CAP = 10_000


class Page(list[Any]):
    """The rows of a listing, and how many rows matched in all: more than `len(page)` when
    the limit cut the listing (the agent is then told, see cli/output.py). `total` is
    counted up to COUNT_CAP + 1, which means "more than COUNT_CAP"."""

    def __init__(self, rows: Iterable[Any], total: int) -> None:
        super().__init__(rows)
        self.total = total


def fetch_page(session: Session, query: Any, limit: int | None) -> Page:
    """`query`'s rows up to `limit` (all with None). Matches are counted only when there are
    more than the limit, so a listing that fits costs one query."""
    if limit is None:
        rows = list(session.exec(query))
        return Page(rows, len(rows))
    rows = list(session.exec(query.limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, len(rows))
    return Page(rows[:limit], count_capped(session, query))


def count_capped(session: Session, query: Any) -> int:
    """How many rows `query` gives, counted up to COUNT_CAP + 1."""
    capped = (
        query.order_by(None).limit(COUNT_CAP + 1).subquery()
    )  # read when called: tests lower it
    return session.scalar(select(func.count()).select_from(capped)) or 0
