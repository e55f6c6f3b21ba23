"""The plans the engines choose for what the timed commands ask, at scale (`--plans`).

Each service call of scale_reads.py runs once with every statement it sends recorded; each
statement is then explained on the same database: `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN
(ANALYZE, BUFFERS)` on PostgreSQL (run again for that, inside a transaction rolled back).
"""

from typing import Any

from scale_build import Built
from scale_reads import service_calls
from sqlalchemy import event

from cpms_admin.db import session_scope


def plans(built: Built, only: str = "") -> list[str]:
    engine = built.open()
    lines: list[str] = []
    try:
        for label, call in service_calls(built).items():
            if only and only not in label:
                continue
            lines.append(f"--- {label}")
            with session_scope(engine, read_only=True) as session:
                statements: list[tuple[str, Any]] = []
                keep = _keeper(statements)
                connection = session.connection()
                event.listen(connection, "before_cursor_execute", keep)
                try:
                    call(session)
                finally:
                    event.remove(connection, "before_cursor_execute", keep)
                for statement, parameters in statements:
                    lines.append("  " + " ".join(statement.split())[:300])
                    lines += ["    " + row for row in explain(connection, statement, parameters)]
    finally:
        engine.dispose()
    return lines


def _keeper(statements: list[tuple[str, Any]]) -> Any:
    def keep(_c: Any, _k: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    return keep


def explain(connection: Any, statement: str, parameters: Any) -> list[str]:
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return [str(row[-1]) for row in rows]
    rows = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
    return [str(row[0]) for row in rows]


def index_check(built: Built) -> str:
    """Whether `member list --search`'s statements go through the search index."""
    from cpms_admin.members.search import FTS_TABLE, TRIGRAM_INDEX

    index = FTS_TABLE if built.engine == "sqlite" else TRIGRAM_INDEX
    lines = plans(built, "--search")
    used = any(index in line for line in lines if line.startswith("    "))
    # A read of every member: SQLite's bare "SCAN member", PostgreSQL's sequential scan (the
    # walk of the first 2,000 in name order, "SCAN member USING INDEX", is bounded).
    scans = [
        line.strip()
        for line in lines
        if line.strip() == "SCAN member" or "Seq Scan on member " in line
    ]
    verdict = "yes" if used else "NO"
    return f"search through its index ({index}) at this size: {verdict}" + (
        f"; full scans: {scans}" if scans else ""
    )
