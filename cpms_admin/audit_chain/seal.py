"""Appending to the chain: events are sealed and written when their transaction commits.

`audit.record` and `RunAudit.record_members` give their rows an id at once (the run's members
name its event by id) and leave them pending on the session. Just before the commit, one
step locks the chain's head (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the transaction
already holds the database's one write lock, db.py opens writers with BEGIN IMMEDIATE), gives
each pending row the next seq, the hash before it, the current key id and its hash, inserts
them all in one statement and moves the head on, in the transaction that commits. Two agents
at once queue for the head and extend the chain one after the other: no fork, and the
unique index on `seq` would refuse one anyway. The head is locked only for that last step.

The key comes from the pepper: the session's (`use_keys`), else its engine's (`keyed`), a
`Peppers` or a function that loads them (the CLI's checks them against the database).
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, event, func, select, update
from sqlmodel import Session

from cpms_admin.audit_chain.form import (
    EVENTS,
    HEAD,
    Keyring,
    canonical,
    head_is_authentic,
)
from cpms_admin.audit_chain.group import EventGroup, seal_group
from cpms_admin.db import transaction
from cpms_admin.db_insert import insert_rows, take_ids
from cpms_admin.errors import NotReady
from cpms_admin.faults import failpoint
from cpms_admin.pepper import Peppers

KeySource = Peppers | Callable[[], Peppers]

_KEYS = "cpms_audit_keys"  # in Session.info or the engine's execution options
_PENDING = "cpms_audit_pending"  # rows to seal at the commit of the session's transaction
_NEXT_ID = "cpms_audit_next_id"  # SQLite: the next free event id in this transaction
_HOOKED = "cpms_audit_hooked"
# In db upgrade's session: how many events from before the chain it sealed.
_LEGACY_SEALED = "cpms_audit_legacy_sealed"
_COLUMNS = tuple(column.name for column in EVENTS.columns)
_LEGACY_CHUNK = 2000


def keyed(engine: Engine, source: KeySource) -> Engine:
    """`engine`, whose sessions seal the audit events they write with `source`'s peppers."""
    return engine.execution_options(**{_KEYS: source})


def use_keys(session: Session, source: KeySource) -> None:
    """Seal `session`'s events with `source`'s peppers, whatever its engine says (`db upgrade`
    and `pepper rotate` have the peppers in hand before the database records them)."""
    session.info[_KEYS] = source


def keyring(session: Session) -> Keyring:
    source = session.info.get(_KEYS)
    if source is None:
        source = session.get_bind().get_execution_options().get(_KEYS)
    if source is None:
        raise NotReady(
            "the audit log is sealed with a key from the pepper, and this database connection "
            "was opened without one: open the engine with audit_chain.keyed (docs/audit.md)"
        )
    return Keyring(source if isinstance(source, Peppers) else source())


def allocate_ids(session: Session, count: int) -> list[int]:
    """`count` ids for new events, taken now (a run's members name its event by id). The
    events go in only at commit, so the ids this transaction took are remembered (SQLite)."""
    ids = take_ids(session, EVENTS, count, first_free=session.info.get(_NEXT_ID))
    if ids:
        session.info[_NEXT_ID] = ids[-1] + 1
    return ids


def append(session: Session, rows: Iterable[Mapping[str, Any]]) -> None:
    """Queue events (each with its id) to be sealed and written when the session's
    transaction commits; dropped if it rolls back."""
    empty = dict.fromkeys(_COLUMNS)
    _pending(session).extend({**empty, **row} for row in rows)


def append_group(session: Session, group: EventGroup) -> None:
    """`append` for events that differ only by id and member (group.py)."""
    _pending(session).append(group)


def _pending(session: Session) -> list[dict[str, Any] | EventGroup]:
    pending: list[dict[str, Any] | EventGroup] = session.info.setdefault(_PENDING, [])
    if not session.info.get(_HOOKED):
        event.listen(session, "before_commit", _seal_pending)
        event.listen(session, "after_transaction_end", _forget)
        session.info[_HOOKED] = True
    return pending


def _forget(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the session's own transaction, not a savepoint
        session.info.pop(_PENDING, None)
        session.info.pop(_NEXT_ID, None)


def _seal_pending(session: Session) -> None:
    pending: list[dict[str, Any] | EventGroup] = session.info.get(_PENDING) or []
    if not pending:
        return
    keys = keyring(session)  # before the head is locked: it may read the pepper file
    session.flush()  # the rows the events name (a new member) are written first
    upgrading = _LEGACY_SEALED in session.info
    legacy = extend(
        session.connection(), keys, pending, upgrading=upgrading, reload=lambda: keyring(session)
    )
    failpoint("audit.sealed")  # the head locked, the transaction not committed yet
    if upgrading:
        session.info[_LEGACY_SEALED] += legacy
    pending.clear()


def extend(
    conn: Connection,
    keys: Keyring,
    rows: list[dict[str, Any] | EventGroup],
    *,
    upgrading: bool = False,
    reload: Callable[[], Keyring] | None = None,
) -> int:
    """Seal `rows` (complete, with ids) as the chain's next events and write them. Events from
    before the chain that still wait come first, sealed if `upgrading` (how many), else
    NotReady: `db upgrade` seals them, as the one writer that may UPDATE audit_event.

    A head sealed with a pepper newer than `keys`' was sealed by a `pepper rotate` that
    committed while this transaction waited for the head (its pepper, written and not yet
    recorded, had been left out of `keys`): the keys are then read again (`reload`)."""
    head = _lock_head(conn)
    if reload is not None and type(head["key_id"]) is int and head["key_id"] > keys.current_id:
        keys = reload()
    _check_head(keys, head)
    legacy = 0
    if head["legacy_max_id"] is not None:
        if not upgrading:
            raise NotReady(f"audit events are not sealed: {UNSEALED_WHY}")
        legacy = seal_legacy(conn, keys, head)
    key_id = keys.current_id
    seq, previous = head["seq"], head["hash"]
    sealed: list[tuple[Any, ...]] = []
    for row in rows:
        if isinstance(row, EventGroup):
            group, seq, previous = seal_group(row, keys, key_id, seq, previous)
            sealed.extend(group)
            continue
        seq += 1
        row["seq"], row["prev_hash"], row["key_id"] = seq, previous, key_id
        previous = row["hash"] = keys.event_hash(key_id, canonical(row))
        sealed.append(tuple(row[name] for name in _COLUMNS))
    # db_insert: COPY on PostgreSQL, multi-row INSERTs on SQLite, each distinct value
    # converted once (a batch's events share their moment, agent and reason).
    insert_rows(conn, EVENTS, _COLUMNS, sealed)
    head.update(seq=seq, hash=previous)
    advance(conn, keys, head)
    return legacy


def locked_head(conn: Connection, keys: Keyring) -> dict[str, Any]:
    """The chain's head, locked until the transaction ends; NotReady when it is not as the
    chain left it (extending it would hide what was done to it)."""
    head = _lock_head(conn)
    _check_head(keys, head)
    return head


def _lock_head(conn: Connection) -> dict[str, Any]:
    found = conn.execute(select(HEAD).where(HEAD.c.id == 1).with_for_update()).mappings().first()
    if found is None:
        raise NotReady(
            "the audit chain's head is missing: no event can be written; "
            "run cpms-admin audit verify and call an administrator"
        )
    return dict(found)


def _check_head(keys: Keyring, head: dict[str, Any]) -> None:
    if not head_is_authentic(keys, head):
        raise NotReady(
            "the audit chain's head does not match its seal (changed outside cpms-admin): "
            "no event can be written; run cpms-admin audit verify and call an administrator"
        )


def advance(conn: Connection, keys: Keyring, head: dict[str, Any]) -> None:
    """Write `head` back, sealed with the current key."""
    head["key_id"] = keys.current_id
    head["mac"] = keys.head_mac(keys.current_id, head)
    conn.execute(update(HEAD).where(HEAD.c.id == 1).values({k: v for k, v in head.items()}))


def seal_legacy(conn: Connection, keys: Keyring, head: dict[str, Any]) -> int:
    """Seal the events from before the chain (ids up to `legacy_max_id`, no seq yet) in id
    order, as the chain's next events; `head` is moved on (the caller writes it). The one
    UPDATE of audit_event the program makes, once, in `db upgrade`."""
    key_id, last_id, sealed = keys.current_id, 0, 0
    seq, previous = head["seq"], head["hash"]
    query = (
        select(EVENTS)
        .where(EVENTS.c.seq.is_(None), EVENTS.c.id <= head["legacy_max_id"])
        .order_by(EVENTS.c.id)
        .limit(_LEGACY_CHUNK)
    )
    seal = (
        update(EVENTS)
        .where(EVENTS.c.id == bindparam("event_id"))
        .values(
            seq=bindparam("new_seq"),
            prev_hash=bindparam("new_prev"),
            hash=bindparam("new_hash"),
            key_id=bindparam("new_key"),
        )
    )
    while rows := conn.execute(query.where(EVENTS.c.id > last_id)).mappings().all():
        changes = []
        for row in rows:
            seq += 1
            values = {**row, "seq": seq, "prev_hash": previous, "key_id": key_id}
            digest = keys.event_hash(key_id, canonical(values))
            changes.append(
                {
                    "event_id": row["id"],
                    "new_seq": seq,
                    "new_prev": previous,
                    "new_hash": digest,
                    "new_key": key_id,
                }
            )
            previous, last_id = digest, row["id"]
        conn.execute(seal, changes)
        sealed += len(changes)
    head.update(seq=seq, hash=previous, legacy_max_id=None)
    return sealed


# Said wherever unsealed events from before the chain stop something: the database cannot
# tell an interrupted upgrade from a chain reset by hand, so sealing them is a person's call.
UNSEALED_WHY = (
    "an upgrade interrupted right after migration 0011 leaves them so, and so does a chain "
    "reset by hand; once you know they are genuine (docs/audit.md): cpms-admin db upgrade "
    "--seal-waiting"
)


def waiting(session: Session) -> int:
    """How many events from before the chain wait to be sealed."""
    with transaction(session):
        conn = session.connection()
        legacy_max_id = conn.execute(
            select(HEAD.c.legacy_max_id).where(HEAD.c.id == 1)
        ).scalar_one_or_none()
        return 0 if legacy_max_id is None else count_waiting(conn, legacy_max_id)


def count_waiting(conn: Connection, legacy_max_id: int) -> int:
    """The events from before the chain (ids up to the head's `legacy_max_id`) not sealed."""
    query = select(func.count()).where(EVENTS.c.seq.is_(None), EVENTS.c.id <= legacy_max_id)
    return int(conn.execute(query).scalar_one())


def upgrading(session: Session) -> None:
    """Let `session` (db upgrade's) seal the events from before the chain, with its first
    events or in `seal_waiting`."""
    session.info.setdefault(_LEGACY_SEALED, 0)


def seal_waiting(session: Session) -> int:
    """Seal the events from before the chain that still wait (`db upgrade` calls it right
    after migrating), in a transaction of its own; how many this session sealed, here or
    with the first events it wrote."""
    upgrading(session)
    with transaction(session):
        keys = keyring(session)
        conn = session.connection()
        head = locked_head(conn, keys)
        if head["legacy_max_id"] is not None:
            session.info[_LEGACY_SEALED] = session.info.get(_LEGACY_SEALED, 0) + seal_legacy(
                conn, keys, head
            )
            advance(conn, keys, head)
    return int(session.info.get(_LEGACY_SEALED, 0))
