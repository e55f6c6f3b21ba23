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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select
from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.audit_chain.form import EVENTS, HEAD, Keyring, head_is_authentic, plain
from cpms_admin.audit_chain.seal import advance, keyring, locked_head
from cpms_admin.audit_chain.verify import ChainReport, ChainWalk, broken_report
from cpms_admin.clock import Clock, system_clock
from cpms_admin.db import reader, transaction
from cpms_admin.english import count
from cpms_admin.errors import Conflict, InvalidInput, NotReady, Refused
from cpms_admin.private_files import (
    private_dir,
    refuse_reserved_source,
    remove_left_behind_in,
    write_private_atomically,
)
from cpms_admin.vocabulary import AuditAction, ChainProblem

_CHUNK = 5000
_ARCHIVED = {"id", "at", "seq", "prev_hash", "hash", "key_id"}  # columns added later may lack
_COLUMNS = set(EVENTS.c.keys())  # all an archived event holds
_ARCHIVE_NAME = r"audit-\d{8}T\d{12}Z\.jsonl"  # `archive_events_into`'s
_MAX_LINE = 1 << 20  # bytes of one archived event's line: a few hundred, a few thousand at most


def archivable(session: Session, *, before: datetime) -> int:
    """How many events `archive_events` would archive now with this cutoff (a dry run). Reads
    on a connection of its own, as the archive does: it holds no lock."""
    before = before if before.tzinfo else before.replace(tzinfo=UTC)
    with reader(_engine(session)).connect() as conn:
        head = conn.execute(select(HEAD).where(HEAD.c.id == 1)).mappings().one()
        first_kept = conn.execute(
            select(func.min(EVENTS.c.seq)).where(EVENTS.c.at >= before, EVENTS.c.seq.is_not(None))
        ).scalar()
    through = head["seq"] if first_kept is None else first_kept - 1
    return max(0, int(through) - int(head["anchor_seq"]))


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def archive_events(
    session: Session,
    *,
    before: datetime,
    out: Path,
    agent: str,
    clock: Clock = system_clock,
) -> int:
    """Archive to `out` (a new file, 0600, JSON lines) then drop the chain's events older than
    `before`, and re-anchor the chain; how many events went (0: no file is written). Refused
    when those events do not verify; Conflict when `out` exists or another archive ran."""
    keys = keyring(session)
    before = before if before.tzinfo else before.replace(tzinfo=UTC)
    if out.exists() or out.is_symlink():
        raise Conflict(f"{out} already exists: archive to a new file")
    written = _write_archive(session, keys, before=before, out=out)
    if written is None:
        return 0
    head, walk = written
    through, anchor_hash = walk.expected - 1, walk.previous
    with transaction(session):
        conn = session.connection()
        locked = locked_head(conn, keys)
        if locked["anchor_seq"] != head["anchor_seq"]:
            out.unlink()  # a copy of events that run archived, which nothing would record
            raise Conflict("another archive of the audit log ran meanwhile: run it again")
        dropped = conn.execute(
            delete(EVENTS).where(EVENTS.c.seq > head["anchor_seq"], EVENTS.c.seq <= through)
        ).rowcount
        if dropped != walk.checked:
            out.unlink()  # rolled back: these events stay, and the next run archives them
            raise Conflict(
                f"{walk.checked} audit events were archived but {dropped} found to drop: "
                "the log changed meanwhile; nothing was dropped, run it again"
            )
        locked.update(anchor_seq=through, anchor_hash=anchor_hash)
        advance(conn, keys, locked)
        audit.record(
            session,
            agent=agent,
            action=AuditAction.audit_archive,
            at=clock(),
            before=before,
            events=dropped,
            through_seq=through,
            anchor_hash=anchor_hash,
            file=str(out),
        )
    return dropped


def _write_archive(
    session: Session, keys: Keyring, *, before: datetime, out: Path
) -> tuple[dict[str, Any], ChainWalk] | None:
    """Write the chain's events older than `before` to `out`, each checked on the way: the
    head they were read under and the walk that checked them, or None (no file) when there
    are none."""
    with reader(_engine(session)).connect() as conn:  # never holds a writer's lock
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
            return None
        with write_private_atomically(out, encoding="ascii", new_name=True) as file:
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
    return head, walk


def archive_events_into(
    session: Session,
    *,
    before: datetime,
    directory: Path,
    agent: str,
    clock: Clock = system_clock,
    like: Path | None = None,
) -> int:
    """`archive_events` to a new file of `directory`, named after the moment of the run:
    `audit-20270601T020000123456Z.jsonl`. Missing, the directory is made 0700, or with the
    group bits of `like` (the database file: every admin and the nightly cron archive there);
    no link is followed. A run that crashed after writing its file leaves it; the next run
    writes its own. Called under purge's run lock, as `remove_killed_archives`."""
    folder = private_dir(directory, like=like)
    remove_killed_archives(folder, like=like)
    stamp = clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return archive_events(
        session, before=before, out=folder / f"audit-{stamp}.jsonl", agent=agent, clock=clock
    )


def remove_killed_archives(directory: Path, *, like: Path | None = None) -> None:
    """Remove what an archive killed while writing left in `directory`: a hidden copy of old
    events, which would stay for good (no later run writes that name again). At once, every
    purge, whether it archives or not: its run lock says no archive is being written."""
    if directory.is_dir():
        folder = private_dir(directory, like=like)  # a folder of ours, not through a link
        remove_left_behind_in(folder, _ARCHIVE_NAME, settled_seconds=0)


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


def verify_archive(session: Session, path: Path) -> ChainReport:
    """Walk an archive written by `archive_events` (keys from the session). It starts where
    its first event says (its `anchor_*` is the place before it) and ends at its last (its
    `head_*`): the next archive, or the database, must start from that hash. Lines cut from
    either end leave a chain that walks; the record of the run that wrote the file, while
    the database holds it, says where the file must start and end."""
    keys = keyring(session)
    walk: ChainWalk | None = None
    place: dict[str, Any] = {}
    for event in _archived(path):
        if walk is None:
            place = {"anchor_seq": event["seq"] - 1, "anchor_hash": event["prev_hash"]}
            walk = ChainWalk(keys, anchor_seq=event["seq"] - 1, anchor_hash=event["prev_hash"])
        if broken := walk.step(event):
            return broken_report(walk, broken, **place)
        place.update(head_seq=event["seq"], head_hash=event["hash"])
    record = _record_of(session, path)
    if walk is None:
        if record is None:
            raise InvalidInput(f"{path}: no event, not an archive (purge never writes one empty)")
        return _cut_short(path, record, held="no event", first_bad_seq=record.held[0])
    first, last = place["anchor_seq"] + 1, place["head_seq"]
    held = f"seq {first} to {last}"
    if record is None:
        return ChainReport(
            ok=True,
            checked=walk.checked,
            message=f"archive intact: {count(walk.checked, 'event')} checked ({held}); the "
            "database holds no record of the purge that wrote it (archived since, or the run "
            "stopped before dropping its events), so its ends are not checked",
            **place,
        )
    if (first, last, place["head_hash"]) != record.held:
        missing = record.held[0] if first != record.held[0] else last + 1
        return _cut_short(
            path, record, held=held, first_bad_seq=missing, checked=walk.checked, **place
        )
    return ChainReport(
        ok=True,
        checked=walk.checked,
        message=f"archive intact: {count(walk.checked, 'event')} checked ({held}), "
        f"all that the purge recorded in audit event #{record.event_id} archived",
        **place,
    )


def _cut_short(path: Path, record: "_Record", *, held: str, **report: Any) -> ChainReport:
    first, last, _ = record.held
    return ChainReport(
        ok=False,
        message=f"audit archive {path.name} holds {held}, but the purge that wrote it "
        f"(audit event #{record.event_id}) archived seq {first} to {last}: deleted",
        problem=ChainProblem.deleted,
        **{"checked": 0, **report},
    )


@dataclass(frozen=True)
class _Record:
    """What a run of `archive_events` recorded of its file (its `audit.archive` event)."""

    event_id: int
    held: tuple[int, int, str]  # the first seq, the last, the last event's hash


def _record_of(session: Session, path: Path) -> _Record | None:
    """The record of the run that wrote `path`, found by the file's name (each run names its
    file anew), while the database holds it: None once a later purge archived it too."""
    query = select(EVENTS.c.id, EVENTS.c.details).where(
        EVENTS.c.action == AuditAction.audit_archive
    )
    for event_id, details in session.connection().execute(query):
        try:
            facts = json.loads(details)
            if Path(facts["file"]).name != path.name:
                continue
            last, events, last_hash = facts["through_seq"], facts["events"], facts["anchor_hash"]
            return _Record(event_id, (last - events + 1, last, last_hash))
        except (ValueError, TypeError, KeyError):
            continue  # not as `archive_events` writes it: `audit verify` names the change
    return None


def _archived(path: Path) -> Iterator[dict[str, Any]]:
    """The events of an archive, line by line; InvalidInput naming the first line that is
    not one as `archive_events` writes it (ASCII JSON, each key once: a second `reason`
    would show a reader one value and the walk the other)."""
    refuse_reserved_source(path, "an audit archive")
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(iter(lambda: lines.readline(_MAX_LINE + 1), b""), 1):
                if len(line) > _MAX_LINE:  # read no further: /dev/zero has no line end
                    raise InvalidInput(
                        f"{path}, line {number}: longer than {_MAX_LINE >> 20} MiB, which no "
                        "archived event is: not an archive"
                    )
                try:
                    event = json.loads(line.decode("ascii"), object_pairs_hook=_each_key_once)
                    if not _is_archived_event(event):
                        raise ValueError
                    yield event
                except ValueError:  # UnicodeDecodeError and JSONDecodeError included
                    raise InvalidInput(f"{path}, line {number}: not an archived event") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the archive ({exc.strerror})") from None


def _each_key_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key twice")
    return found


def _is_archived_event(event: object) -> bool:
    """Whether a line of an archive holds what the walk reads, of the types it reads, and
    nothing the table does not hold (the hash covers its columns, no other key)."""
    return (
        isinstance(event, dict)
        and _ARCHIVED <= event.keys() <= _COLUMNS
        and all(type(event[name]) is int for name in ("id", "seq"))
        and (event["key_id"] is None or type(event["key_id"]) is int)
        and all(isinstance(event[name], str) for name in ("at", "prev_hash", "hash"))
    )
