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
