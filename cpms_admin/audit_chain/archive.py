"""Retention: archive the chain's oldest events to a file, drop them, re-anchor the chain.

What goes is the chain's beginning up to the first event at or after the cutoff (an event
older than the cutoff sealed after a newer one waits for the next run: the chain is only
ever cut at one place). First, read in a snapshot of its own, each event is checked as
`audit verify` checks it and written to the archive, one JSON object a line with every
column, its chain fields included, so the archive can be verified later on its own
(`audit verify --archive FILE`); an archive never hides a break, it refuses. Then, in one
transaction: the events archived are deleted, the head's anchor moves to the last of them
(its seq and hash: the first event kept names that hash), the head is sealed again, and
the archive is audited (`audit.archive`). A crash between the two leaves the file and every
event: the next run archives them again, under another name.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select
from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.audit_chain.form import EVENTS, HEAD, Keyring, head_is_authentic, plain
from cpms_admin.audit_chain.seal import advance, keyring, locked_head
from cpms_admin.audit_chain.verify import ChainWalk
from cpms_admin.db import reader, transaction
from cpms_admin.errors import Conflict, NotReady, Refused
from cpms_admin.private_files import write_private_atomically

_CHUNK = 5000


def archivable(session: Session, *, before: datetime) -> int:
    """How many events `archive_events` would archive now with this cutoff (a dry run)."""
    head = session.execute(select(HEAD).where(HEAD.c.id == 1)).mappings().one()
    first_kept = session.execute(
        select(func.min(EVENTS.c.seq)).where(EVENTS.c.at >= before, EVENTS.c.seq.is_not(None))
    ).scalar()
    through = head["seq"] if first_kept is None else first_kept - 1
    return max(0, int(through) - int(head["anchor_seq"]))


def archive_events(session: Session, *, before: datetime, out: Path, agent: str) -> int:
    """Archive to `out` (a new file, 0600, JSON lines) then drop the chain's events older than
    `before`, and re-anchor the chain; how many events went (0: no file is written). Refused
    when those events do not verify; Conflict when `out` exists or another archive ran."""
    keys = keyring(session)
    before = before if before.tzinfo else before.replace(tzinfo=UTC)
    if out.exists() or out.is_symlink():
        raise Conflict(f"{out} already exists: archive to a new file")
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with reader(engine).connect() as conn:  # never holds a writer's lock
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        head = _checked_head(conn, keys)
        walk = ChainWalk(keys, anchor_seq=head["anchor_seq"], anchor_hash=head["anchor_hash"])
        query = (
            select(EVENTS)
            .where(EVENTS.c.seq > head["anchor_seq"], EVENTS.c.seq <= head["seq"])
            .order_by(EVENTS.c.seq)
            .execution_options(yield_per=_CHUNK)
        )
        rows = conn.execute(query).mappings()
        first = next(rows, None)
        if first is None or first["at"] >= before:
            rows.close()
            return 0
        with write_private_atomically(out, encoding="ascii") as file:
            event: Mapping[Any, Any] | None = first
            while event is not None and event["at"] < before:
                if broken := walk.step(event, head_seq=head["seq"]):
                    raise Refused(
                        f"audit events not archived: the chain is broken at {broken.what}; "
                        "run cpms-admin audit verify"
                    )
                file.write(_line(event))
                event = next(rows, None)
            rows.close()
    through, anchor_hash = walk.expected - 1, walk.previous
    with transaction(session):
        conn = session.connection()
        locked = locked_head(conn, keys)
        if locked["anchor_seq"] != head["anchor_seq"]:
            raise Conflict("another archive of the audit log ran meanwhile: run it again")
        dropped = conn.execute(
            delete(EVENTS).where(EVENTS.c.seq > head["anchor_seq"], EVENTS.c.seq <= through)
        ).rowcount
        if dropped != walk.checked:
            raise Conflict(
                f"{walk.checked} audit events were archived but {dropped} found to drop: "
                "the log changed meanwhile; nothing was dropped, run it again"
            )
        locked.update(anchor_seq=through, anchor_hash=anchor_hash)
        advance(conn, keys, locked)
        audit.record(
            session,
            agent=agent,
            action="audit.archive",
            before=before,
            events=dropped,
            through_seq=through,
            anchor_hash=anchor_hash,
            file=str(out),
        )
    return dropped


def _checked_head(conn: Connection, keys: Keyring) -> dict[str, Any]:
    head = dict(conn.execute(select(HEAD).where(HEAD.c.id == 1)).mappings().one())
    if not head_is_authentic(keys, head):
        raise Refused(
            "audit events not archived: the chain's head does not match its seal; "
            "run cpms-admin audit verify"
        )
    if head["legacy_max_id"] is not None:
        raise NotReady("audit events from before the chain wait to be sealed: run db upgrade")
    return head


def _line(event: Mapping[Any, Any]) -> str:
    values = {name: plain(value) for name, value in event.items()}
    return json.dumps(values, ensure_ascii=True, separators=(",", ":")) + "\n"
