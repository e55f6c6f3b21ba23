"""`audit verify`: walk the chain and name the first place it breaks.

The walk reads the events in seq order, a few thousand at a time (a server-side cursor on
PostgreSQL), and keeps only the hash of the last one: memory stays flat at millions of
events. Each event must sit at the next place (else the one before is missing: deleted),
match its own hash (else it was changed, or forged without the key) and name the hash of the
event before it (else it was sealed elsewhere: moved, or the events before it were
replaced). Then the head: the chain must end where the head says (else its last events were
deleted), and no event may lie outside the chain (no seq: written by hand). The head itself
is checked against its MAC first, so neither its end nor its anchor can be moved without
the key. Everything is read in one snapshot, so events written meanwhile do not count.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select
from sqlmodel import Session

from cpms_admin.audit_chain.form import (
    EVENTS,
    GENESIS,
    HEAD,
    Keyring,
    canonical,
    head_is_authentic,
    missing_key,
)
from cpms_admin.audit_chain.seal import UNSEALED_WHY, count_waiting, keyring
from cpms_admin.english import count
from cpms_admin.errors import Refused
from cpms_admin.vocabulary import ChainProblem

_CHUNK = 5000


@dataclass(frozen=True)
class ChainReport:
    """What `audit verify` found; `as_json` is its `--json` (docs/audit.md)."""

    ok: bool
    checked: int  # events whose hash and link were checked
    message: str
    problem: ChainProblem | None = None
    first_bad_id: int | None = None
    first_bad_seq: int | None = None
    anchor_seq: int = 0  # the chain starts after this place (events archived up to it)
    anchor_hash: str = GENESIS
    head_seq: int = 0  # the last place the chain sealed
    head_hash: str = GENESIS

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else Refused.exit_code

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_id": self.first_bad_id,
            "first_bad_seq": self.first_bad_seq,
            "problem": None if self.problem is None else str(self.problem),
            "message": self.message,
            "anchor_seq": self.anchor_seq,
            "anchor_hash": self.anchor_hash,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
        }


@dataclass(frozen=True)
class _Break:
    problem: ChainProblem
    event_id: int | None
    seq: int | None
    what: str


class ChainWalk:
    """The checks of one event after another, from an anchor; stops at the first break."""

    def __init__(self, keys: Keyring, *, anchor_seq: int, anchor_hash: str) -> None:
        self.keys = keys
        self.expected, self.previous = anchor_seq + 1, anchor_hash
        self.anchor_seq, self.checked, self.last_id = anchor_seq, 0, None

    def step(self, event: Mapping[Any, Any], *, head_seq: int | None = None) -> _Break | None:
        event_id, seq = event["id"], event["seq"]
        at = f"event #{event_id} (seq {seq})"
        if seq < self.expected:
            where = "before the chain's start" if seq <= self.anchor_seq else "twice"
            return _Break(
                ChainProblem.inserted, event_id, seq, f"{at} is {where}: inserted by hand"
            )
        if seq > self.expected:
            after = f" after event #{self.last_id}" if self.last_id is not None else ""
            return _Break(
                ChainProblem.deleted,
                None,
                self.expected,
                f"seq {self.expected}{after} is missing, the chain resumes at {at}: deleted",
            )
        if head_seq is not None and seq > head_seq:
            return _Break(
                ChainProblem.inserted,
                event_id,
                seq,
                f"{at} lies past the last event the chain sealed (seq {head_seq}): "
                "inserted by hand",
            )
        key_id = event["key_id"]
        if self.keys.could_have_sealed(key_id) and not self.keys.has(key_id):
            raise missing_key(key_id)
        matches = (
            key_id is not None
            and self.keys.has(key_id)
            and event["hash"] == self.keys.event_hash(key_id, canonical(event))
        )
        follows = event["prev_hash"] == self.previous
        if not matches:
            what = (
                "its content does not match its hash: changed after it was written"
                if follows
                else "neither its content nor its link to the event before it match its "
                "hash: rewritten, or forged"
            )
            return _Break(ChainProblem.changed, event_id, seq, f"{at}: {what}")
        if not follows:
            what = (
                "it was sealed after another event than the one before it: moved, "
                "or the events before it were replaced"
            )
            return _Break(ChainProblem.out_of_order, event_id, seq, f"{at}: {what}")
        self.expected, self.previous = seq + 1, event["hash"]
        self.checked, self.last_id = self.checked + 1, event_id
        return None


def broken_report(walk: ChainWalk, found: _Break, **place: Any) -> ChainReport:
    return ChainReport(
        ok=False,
        checked=walk.checked,
        message=f"audit chain broken at {found.what}",
        problem=found.problem,
        first_bad_id=found.event_id,
        first_bad_seq=found.seq,
        **place,
    )


def _malformed(conn: Connection, walk: ChainWalk, error: Exception) -> _Break:
    """The next event holds a value its column cannot (a date that is none, text for a
    number): only an edit by hand puts it there."""
    event_id = conn.execute(select(EVENTS.c.id).where(EVENTS.c.seq == walk.expected)).scalar()
    at = f"event #{event_id} (seq {walk.expected})" if event_id is not None else "an event"
    return _Break(
        ChainProblem.changed,
        event_id,
        walk.expected,
        f"{at}: a value its column cannot hold ({error}): changed by hand",
    )


def _head_problem(what: str, **place: Any) -> ChainReport:
    return ChainReport(
        ok=False,
        checked=0,
        message=f"audit chain broken: {what}",
        problem=ChainProblem.head_changed,
        **place,
    )


def verify_chain(session: Session) -> ChainReport:
    """Walk the database's chain (keys from the session, as when sealing). Pass a session that
    has not begun: on PostgreSQL it reads in one REPEATABLE READ snapshot."""
    keys = keyring(session)
    options = {"isolation_level": "REPEATABLE READ"} if _postgresql(session) else {}
    conn = session.connection(execution_options=options)
    found = conn.execute(select(HEAD).where(HEAD.c.id == 1)).mappings().first()
    if found is None:
        return _head_problem("the chain's head is missing (deleted by hand)")
    head = dict(found)
    place = {
        "anchor_seq": head["anchor_seq"],
        "anchor_hash": head["anchor_hash"],
        "head_seq": head["seq"],
        "head_hash": head["hash"],
    }
    if not head_is_authentic(keys, head):
        return _head_problem(
            "the chain's head (its last seq and hash, its anchor) does not match its seal: "
            "changed by hand",
            **place,
        )
    if head["legacy_max_id"] is not None:
        waiting = count_waiting(conn, head["legacy_max_id"])
        return ChainReport(
            ok=False,
            checked=0,
            message=f"{count(waiting, 'audit event')} written before the chain existed "
            f"are not sealed: {UNSEALED_WHY}",
            problem=ChainProblem.unsealed,
            **place,
        )
    walk = ChainWalk(keys, anchor_seq=head["anchor_seq"], anchor_hash=head["anchor_hash"])
    if broken := _walk_events(conn, walk, head_seq=head["seq"]) or _stray_event(conn):
        return broken_report(walk, broken, **place)
    return ChainReport(
        ok=True,
        checked=walk.checked,
        message=_intact(walk.checked, head["anchor_seq"], head["seq"]),
        **place,
    )


def _walk_events(conn: Connection, walk: ChainWalk, *, head_seq: int) -> _Break | None:
    """The chained events in order, each checked against the one before; then that the
    last of them is the head's."""
    query = select(EVENTS).where(EVENTS.c.seq.is_not(None)).order_by(EVENTS.c.seq)
    rows = conn.execute(query.execution_options(yield_per=_CHUNK)).mappings()
    try:
        for event in rows:
            if broken := walk.step(event, head_seq=head_seq):
                rows.close()
                return broken
    except (ValueError, TypeError) as exc:  # SQLite keeps any value in any column
        rows.close()
        return _malformed(conn, walk, exc)
    if walk.expected > head_seq:
        return None
    missing = head_seq - walk.expected + 1
    what = (
        f"seq {walk.expected}, the chain's last event, is missing: deleted"
        if missing == 1
        else f"seq {walk.expected} is missing, and the {missing - 1} events after it up "
        f"to seq {head_seq}, where the chain ends: deleted"
    )
    return _Break(ChainProblem.deleted, None, walk.expected, what)


def _stray_event(conn: Connection) -> _Break | None:
    """An event outside the chain (no seq): inserted by hand."""
    stray = conn.execute(
        select(EVENTS.c.id, func.count().over()).where(EVENTS.c.seq.is_(None)).order_by(EVENTS.c.id)
    ).first()
    if stray is None:
        return None
    others = f" (and {count(stray[1] - 1, 'other')})" if stray[1] > 1 else ""
    what = f"event #{stray[0]}{others} is not in the chain (no seq): inserted by hand"
    return _Break(ChainProblem.inserted, stray[0], None, what)


def _intact(checked: int, anchor_seq: int, head_seq: int) -> str:
    if not checked:
        return "audit chain intact: no event since its start" + (
            f" (events up to seq {anchor_seq} archived)" if anchor_seq else ""
        )
    archived = f"; events up to seq {anchor_seq} archived" if anchor_seq else ""
    return (
        f"audit chain intact: {count(checked, 'event')} checked "
        f"(seq {anchor_seq + 1} to {head_seq}{archived})"
    )


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
