"""Many rows into one table in the caller's transaction: binary COPY on PostgreSQL, multi-row INSERT
statements on SQLite. For the bulk writers (members import, the audit chain's events).

Core's executemany converts every value of every row through its column's type, and on
SQLite runs one statement per row: the FTS5 search index behind `member` (migration 0006)
then writes its pending terms out at every statement, which made a bare executemany of
member rows cost 48 CPU µs a row against 14 for the same rows in statements of 1,500
(bench/scale_bulk.py). Here values are converted as SQLAlchemy would (the columns' bind
processors: SQLite's text moments and dates, UTCDateTime's conversion to UTC), but once per
distinct value of a column in the call: a batch's rows share their moments and flags.

A key the table already holds raises SQLAlchemy's IntegrityError, as Core's insert would.
"""

import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

Row = tuple[Any, ...]


def take_ids(
    session: Session, table: Table, count: int, *, first_free: int | None = None
) -> list[int]:
    """`count` ids for rows of `table` about to be inserted, taken first so the rows need no
    RETURNING: from the table's sequence on PostgreSQL; on SQLite past the highest id (this
    transaction holds the write lock, so they stay free until it ends), or from `first_free`
    when the transaction took ids already that it has not inserted yet."""
    if session.get_bind().dialect.name == "postgresql":
        # The sequence is looked up once, by the subquery (as nextval's own argument, or cast
        # outside it, it was looked up again for every id, at several times the cost of the
        # id), and the ids come back as one array rather than a row each (a sixth of the
        # client's time).
        ids = session.execute(
            text(
                "SELECT array_agg(nextval((SELECT pg_get_serial_sequence(:table, 'id')"
                "::regclass))) FROM generate_series(1, :count)"
            ),
            {"table": table.name, "count": count},
        ).scalar_one()
        return sorted(ids or ())  # no ids asked for: NULL
    if first_free is None:
        first_free = (session.execute(select(func.max(table.c.id))).scalar() or 0) + 1
    return list(range(first_free, first_free + count))


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """`rows` (tuples of Python values in `columns` order) into `table`."""
    if not rows:
        return
    rows = _converted(conn, table, columns, rows)
    names = ", ".join(conn.dialect.identifier_preparer.quote(name) for name in columns)
    target = conn.dialect.identifier_preparer.format_table(table)
    if conn.dialect.name == "postgresql":
        statement = f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)"
        _copy(conn, statement, _column_types(conn, table, columns), rows)
    else:
        head = f"INSERT INTO {target} ({names}) VALUES "  # noqa: S608 (names of the table's own columns)
        _multi_row(conn, head, len(columns), rows)


def _converted(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> Sequence[Row]:
    processors = [
        (at, processor)
        for at, name in enumerate(columns)
        if (processor := _processor(table, name, conn.dialect)) is not None
    ]
    if not processors:
        return rows
    values: list[Sequence[Any]] = list(zip(*rows, strict=True))  # by column
    for at, processor in processors:
        done: dict[Any, Any] = {None: None}
        values[at] = [
            done[value] if value in done else done.setdefault(value, processor(value))
            for value in values[at]
        ]
    return list(zip(*values, strict=True))


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What Core does to a value of the column before the driver gets it (the dialect's own
    type: SQLite's DATETIME writes text without an offset)."""
    return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)


def _column_types(conn: Connection, table: Table, columns: Sequence[str]) -> list[int]:
    """The server's type (oid) of each of `columns`, which a binary COPY must be told."""
    oids: dict[str, int] = dict(
        conn.exec_driver_sql(
            "SELECT attname, atttypid FROM pg_attribute "
            "WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped",
            {"table": table.name},
        ).all()
    )
    return [int(oids[name]) for name in columns]


def _copy(conn: Connection, statement: str, types: list[int], rows: Sequence[Row]) -> None:
    """A binary COPY: neither side turns the values into text and back."""
    import psycopg

    driver = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from None


def _multi_row(conn: Connection, head: str, width: int, rows: Sequence[Row]) -> None:
    driver = conn.connection.dbapi_connection
    limit = (
        driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        if isinstance(driver, sqlite3.Connection)
        else 999
    )
    per = max(1, min(limit, 32766) // width)
    one = "(" + ", ".join(["?"] * width) + ")"
    statements: dict[int, str] = {}
    for at in range(0, len(rows), per):
        chunk = rows[at : at + per]
        statement = statements.get(len(chunk))
        if statement is None:
            statement = statements[len(chunk)] = head + ", ".join([one] * len(chunk))
        conn.exec_driver_sql(statement, tuple(chain.from_iterable(chunk)))
