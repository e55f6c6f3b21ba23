"""What the search tests check of the search index itself, on either engine."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlmodel import Session, select

from cpms_admin.members.search import find_members, search_terms
from cpms_admin.models import Member


def assert_search_index_in_step(session: Session) -> None:
    """The search index is there and, on SQLite, finds each member by their whole
    `search_text` (what the triggers must keep: a member missing from the FTS5 table would
    be missing from searches). SQLite 3.40's integrity-check does not compare an external
    content table with its content, hence the look-up of each member."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            text("INSERT INTO member_search (member_search) VALUES ('integrity-check')")
        )
        blank = "WHERE search_text <> ''"  # a pseudonymised member's: nothing to find
        for member_id, folded in session.execute(
            text(f"SELECT id, search_text FROM member {blank}")
        ):
            assert member_id in search_index_ids(session, folded), (member_id, folded)
        return
    definition = session.execute(
        text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_member_search_text_trgm'")
    ).scalar_one()
    assert "gin (search_text gin_trgm_ops)" in definition


def search_index_ids(session: Session, words: str) -> set[int]:
    """SQLite: the members the FTS5 table finds for these words, side by side as typed."""
    phrase = '"' + words.replace('"', '""') + '"'
    found = session.execute(
        text("SELECT rowid FROM member_search WHERE member_search MATCH :phrase"),
        {"phrase": phrase},
    )
    return set(found.scalars())


def plan_of_search(session: Session, search: str) -> str:
    """The engine's plan for the query that gathers every match (find_members' second way),
    sequential scans discouraged on PostgreSQL (a test table is too small to want an index)."""
    terms = search_terms(search)
    return plan_of_last_query(
        session, lambda: find_members(session, select(Member), terms, limit=50, walk=0)
    )


def plan_of_last_query(
    session: Session, run: Callable[[], object], *, index_scans: bool = False
) -> str:
    """The engine's plan for the last statement `run` sends, sequential scans discouraged on
    PostgreSQL (a test table is too small to want an index); with `index_scans`, bitmap
    scans too, so that an index giving the rows in its order shows as such rather than as
    a few rows fetched and sorted (which statistics left by other tests may prefer)."""
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(connection, "before_cursor_execute", keep)
    statement, parameters = statements[-1]
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    if index_scans:
        connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(row[0]) for row in rows)
