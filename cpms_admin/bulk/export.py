"""`members export`: every member, streamed in the import columns, never a secret.

Rows are fetched in chunks through a server-side cursor (PostgreSQL) or SQLite's own
stepping cursor, so memory stays flat whatever the number of members. On SQLite the read
runs in a deferred transaction: an export must not hold the write lock that agents and
the nightly batch need. It reads one snapshot (PostgreSQL: REPEATABLE READ), so a
workbook's row count, taken first, is the number of rows that follow.
"""

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, Select, func, select
from sqlmodel import Session, SQLModel

from cpms_admin.audit import RunAudit
from cpms_admin.bulk.formats import MemberWriter, open_member_writer
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.clock import Clock, system_clock
from cpms_admin.db import stated, transaction, unindexed
from cpms_admin.errors import InvalidInput
from cpms_admin.vocabulary import AuditAction, MemberStatus

CHUNK = 1000
_MEMBER = SQLModel.metadata.tables["member"]


def _ignore(_: int) -> None:
    return None


def members_to_export(status: str | None) -> Select[Any]:
    """The EXPORT_COLUMNS of the members (all, or those with `status`), in NIR order. A
    pseudonymised member (privacy/pseudonymise.py) is no one any more: never exported."""
    query = select(*(_MEMBER.c[name] for name in EXPORT_COLUMNS)).where(
        _MEMBER.c.pseudonymised_at.is_(None)
    )
    if status is not None:
        query = query.where(_MEMBER.c.status == stated(status))
    if status == MemberStatus.closed:
        # The few closed members found through their own index, then sorted: walking the
        # NIR index for its order would read every member (SQLite chose that).
        return query.order_by(unindexed(_MEMBER.c.nir))
    return query.order_by(_MEMBER.c.nir)


def check_status(status: str | None) -> None:
    if status is not None and status not in set(MemberStatus):
        raise InvalidInput(f"--status must be active or closed, got {status!r}")


@dataclass(frozen=True)
class Exported:
    """What `members export` wrote: `members` rows in `format`, to the file `out` (None: to
    standard output, whose summary is a line on stderr)."""

    members: int
    format: str
    out: str | None

    def as_json(self) -> dict[str, object]:
        return {"exported": self.members, "format": self.format, "out": self.out}


def export_members(
    session: Session,
    *,
    out: IO[Any],
    fmt: str,
    agent: str,
    excel: bool = False,
    status: str | None = None,
    path: str | None = None,
    on_progress: Callable[[int], None] = _ignore,
    clock: Clock = system_clock,
) -> Exported:
    """Write the members (all, or those with `status`) to `out` in NIR order: the file at
    `path`, or standard output when None. `out` is text for CSV (`excel`: for French Excel)
    and JSON Lines, binary for XLSX.

    Only EXPORT_COLUMNS are read from the database, so no PIN hash can leak into a file. The
    export is audited as a bulk run (docs/audit.md): a bulk read of personal data is worth
    knowing about, even if it changes nothing. Its event is committed before the first row
    leaves, so an export cut short (a reader that stopped, Ctrl-C, kill -9) is known too;
    the closing event says how many rows were written, `stopped` when it did not finish.
    """
    check_status(status)
    run = RunAudit(
        agent=agent,
        action=AuditAction.members_export,
        at=clock(),
        format=fmt.lower(),
        excel=excel,
        status=status,
        destination=path or "stdout",
    )
    with transaction(session):
        run.start(session)
    writer: MemberWriter | None = None
    try:
        query = members_to_export(status)
        connection = _one_snapshot(session)
        rows = None
        if fmt.lower() == "xlsx":  # a workbook states its size (xlsx.write.XlsxMemberWriter)
            counted = select(func.count()).select_from(query.subquery())
            rows = connection.execute(counted).scalar_one()
        writer = open_member_writer(out, fmt=fmt, excel=excel, rows=rows)
        result = connection.execution_options(yield_per=CHUNK).execute(query)
        for row in result:  # the EXPORT_COLUMNS, in order
            writer.write_values(row)
            if writer.count % CHUNK == 0:
                on_progress(writer.count)
        writer.close()
    except BaseException:
        # What stopped the export is what the user hears: neither the writer's clean-up nor
        # the closing event may hide it (without the event, the run reads as killed).
        with suppress(Exception):
            if writer is not None:
                writer.abort()
        with suppress(Exception):
            _close(session, run, writer.count if writer else 0, outcome="stopped", clock=clock)
        raise
    _close(session, run, writer.count, outcome="ok", clock=clock)
    return Exported(members=writer.count, format=fmt.lower(), out=path)


def _one_snapshot(session: Session) -> Connection:
    """The session's connection, reading one snapshot for the count and every row."""
    options: dict[str, object] = {"sqlite_begin": "DEFERRED"}
    if session.get_bind().dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    return session.connection(execution_options=options)


def _close(session: Session, run: RunAudit, written: int, *, outcome: str, clock: Clock) -> None:
    session.rollback()  # end the read before writing the closing event
    with transaction(session):
        run.finish(session, counts={"count": written}, outcome=outcome, at=clock())
