"""Who is alive: the lock of a letters batch run, and telling a live batch from a dead one.

A batch row says "running" until its run commits or is abandoned, but a run killed with
SIGKILL cannot say anything. Liveness therefore comes from a lock the kernel or the database
server drops when the process dies:

- SQLite: one run at a time. The run holds an exclusive `flock` on `<db file>.batch-lock`;
  a second run gets Conflict (exit 4). While it is held, any other "running" batch is dead.
- PostgreSQL: several workers may share a queue (claims use `FOR UPDATE SKIP LOCKED`). Each
  run holds a session-level advisory lock `(ADVISORY_CLASS, batch_id)` on a connection of its
  own for its whole life; a batch whose advisory lock can be taken has no live run.
"""

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, text

from cpms_admin.db import ADVISORY_CLASS, sqlite_path
from cpms_admin.errors import Conflict
from cpms_admin.private_files import BATCH_LOCK, hold_run_lock, run_lock_file


class RunGuard(Protocol):
    def hold(self, batch_id: int) -> None:
        """Mark `batch_id` as owned by this run (before its row is committed)."""

    def take_over(self, batch_id: int) -> AbstractContextManager[bool]:
        """Context: True when no live run owns `batch_id` (this run may then recover it)."""

    def close(self) -> None: ...


class FileGuard:
    """SQLite: an exclusive flock held for the whole run; it dies with the process."""

    def __init__(self, database: Path | None) -> None:
        self._fd: int | None = None
        if database is None:  # in-memory database: nobody else can see it
            return
        lock = run_lock_file(database, BATCH_LOCK)
        self._fd = hold_run_lock(
            lock, like=database, busy=f"another letters batch is running (lock {lock})"
        )

    def hold(self, batch_id: int) -> None:
        """Nothing more to do: the file lock already covers every batch."""

    @contextmanager
    def take_over(self, batch_id: int) -> Iterator[bool]:
        yield True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


class AdvisoryGuard:
    """PostgreSQL: one advisory lock per live batch, on a connection used for nothing else."""

    def __init__(self, engine: Engine) -> None:
        # Autocommit: the connection must never sit "idle in transaction" for the whole run.
        self._conn: Connection | None = engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        )
        self._held: set[int] = set()

    def _conn_or_fail(self) -> Connection:
        assert self._conn is not None, "guard already closed"
        return self._conn

    def _try_lock(self, batch_id: int) -> bool:
        statement = text("SELECT pg_try_advisory_lock(:cls, :id)")
        got = self._conn_or_fail().execute(statement, {"cls": ADVISORY_CLASS, "id": batch_id})
        return bool(got.scalar_one())

    def _unlock(self, batch_id: int) -> None:
        statement = text("SELECT pg_advisory_unlock(:cls, :id)")
        self._conn_or_fail().execute(statement, {"cls": ADVISORY_CLASS, "id": batch_id})

    def hold(self, batch_id: int) -> None:
        if not self._try_lock(batch_id):
            raise Conflict(f"letters batch {batch_id} is already held by another run")
        self._held.add(batch_id)

    @contextmanager
    def take_over(self, batch_id: int) -> Iterator[bool]:
        if batch_id in self._held:  # our own batch is alive by definition
            yield False
            return
        if not self._try_lock(batch_id):
            yield False
            return
        try:
            yield True
        finally:
            self._unlock(batch_id)

    def close(self) -> None:
        if self._conn is not None:
            # Closing the connection (not returning it to the pool) drops every lock it held.
            self._conn.invalidate()
            self._conn.close()
            self._conn = None


def open_guard(engine: Engine, database_url: str) -> FileGuard | AdvisoryGuard:
    """The run lock for this database; Conflict when a SQLite run already holds it."""
    if engine.dialect.name == "postgresql":
        return AdvisoryGuard(engine)
    return FileGuard(sqlite_path(database_url))
