"""The database side of an import batch: one look-up of the NIRs already known, then bulk
Core inserts and updates (executemany, or one INSERT ... SELECT for rows that differ only by
member), never one ORM object per row."""

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, any_, bindparam, func, select, text, update
from sqlmodel import Session, SQLModel

from cpms_admin.audit_chain.seal import keyring
from cpms_admin.bulk.import_rows import MEMBER_KEYS, CheckedRow
from cpms_admin.bulk.rows import PIN_HASH, STATUS_COLUMNS
from cpms_admin.credentials.pins import LEGACY_PREFIX, seal_legacy_hash
from cpms_admin.db import ADVISORY_CLASS, IMPORT_LOCK_ID
from cpms_admin.members.fields import COLUMNS
from cpms_admin.members.postal import address_from, same_destination
from cpms_admin.members.records import insert_members as insert_new_members
from cpms_admin.vocabulary import MemberStatus

_MEMBER = SQLModel.metadata.tables["member"]
_ACCOUNT = SQLModel.metadata.tables["account"]
_NEW_ADDRESS = {"undeliverable_at": None, "undeliverable_reason": None}


@dataclass(frozen=True)
class Existing:
    """A member already in the database; `values` (the COLUMNS and STATUS_COLUMNS) only
    when asked for."""

    member_id: int
    values: dict[str, object]
    ever_had_pin: bool  # a PIN now, or one an agent reset (its pin_set_at stays)

    def takes_pin(self, row: CheckedRow) -> bool:
        """A carried-over PIN hash only fills an account that never had a PIN: it must not
        undo a PIN the member set since, nor bring back one an agent reset."""
        return row.pin_hash is not None and not self.ever_had_pin

    def changed(self, row: CheckedRow) -> tuple[str, ...]:
        """The columns an update by `row` would change (`pin_hash` for a carried-over PIN
        hash it would store); () for none."""
        member = row.member
        changed = tuple(name for name in COLUMNS if member[name] != self.values[name])
        return (*changed, PIN_HASH) if self.takes_pin(row) else changed


def one_batch_at_a_time(session: Session) -> None:
    """PostgreSQL: until the transaction ends, no other import's writing batch looks members
    up or adds them (dry runs and the `fail` check pass only read, unlocked), so two imports
    of the same file at once never insert the same member twice
    (the second's batch finds what the first's added, and skips or updates it). SQLite's
    write lock already does this."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:cls, :id)"),
            {"cls": ADVISORY_CLASS, "id": IMPORT_LOCK_ID},
        )


def find_existing(session: Session, nirs: list[str], *, with_values: bool) -> dict[str, Existing]:
    """The members among `nirs` already in the database, in one query."""
    if not nirs:
        return {}
    names = (*COLUMNS, *STATUS_COLUMNS) if with_values else ()
    columns = [_MEMBER.c[name] for name in names]
    query = (
        select(
            _MEMBER.c.id,
            _MEMBER.c.nir,
            (_ACCOUNT.c.pin_hash.is_not(None) | _ACCOUNT.c.pin_set_at.is_not(None)).label("had"),
            *columns,
        )
        .join_from(_MEMBER, _ACCOUNT, _ACCOUNT.c.member_id == _MEMBER.c.id, isouter=True)
        .where(_among(session, nirs))
    )
    found = {}
    for row in session.execute(query).mappings():
        values = {name: row[name] for name in names}
        found[row["nir"]] = Existing(row["id"], values, bool(row["had"]))
    return found


def _among(session: Session, nirs: list[str]) -> ColumnElement[bool]:
    """`member.nir` is one of `nirs`, as one text parameter split by the database (an IN of a
    batch's 5,000 parameters took longer to build than to run, and psycopg's array of them
    a regular expression for each): on PostgreSQL comma-separated (a NIR has no comma), on
    SQLite a JSON array."""
    if session.get_bind().dialect.name == "postgresql":
        return _MEMBER.c.nir == any_(func.string_to_array(",".join(nirs), ","))
    given = func.json_each(bindparam("nirs", json.dumps(nirs))).table_valued("value")
    return _MEMBER.c.nir.in_(select(given.c.value))


def insert_members(
    session: Session, new: list[CheckedRow], *, welcome: list[CheckedRow], now: datetime
) -> list[int]:
    """New members, their accounts (with any carried-over PIN hash) and welcome letters
    (`records.insert_members`, the rows as the checker laid them out); returns the new
    members' ids. A row without status columns makes an active member; one the file says
    closed is closed from the start, with the file's reason and time."""
    asked = {row.nir for row in welcome}
    return insert_new_members(
        session,
        columns=MEMBER_KEYS,
        rows=[row.values if row.status is not None else _active(row.values) for row in new],
        pin_hashes=_sealed(session, [row.pin_hash for row in new]),
        welcome=[row.nir in asked for row in new],
        now=now,
        imported=True,
    )


_STATUS_AT = MEMBER_KEYS.index("status")
_ACTIVE = str(MemberStatus.active)


def _active(values: tuple[object, ...]) -> tuple[object, ...]:
    return (*values[:_STATUS_AT], _ACTIVE, *values[_STATUS_AT + 1 :])


def moves(row: CheckedRow, known: Existing) -> bool:
    """Whether `row` takes its member to another door (not a name, not the same address
    respelt: `members.postal.same_destination`)."""
    return not same_destination(
        address_from(row.member).lines(), address_from(known.values).lines()
    )


def update_members(
    session: Session, changes: list[CheckedRow], *, existing: dict[str, Existing], now: datetime
) -> list[int]:
    """New values for known members; a PIN hash only where the account never had one. The
    status columns are left as they are (an import never changes them: see import_rows). A
    new address (another door: not a name, not the same address respelt) lifts the flag a
    returned letter set, as `member update` does. The ids of the members whose letters now
    go elsewhere (letters/voiding.py)."""
    if not changes:
        return []
    kept: list[dict[str, object]] = []
    moved: list[dict[str, object]] = []
    elsewhere: list[int] = []
    for row in changes:
        known = existing[row.nir]
        values = {name: value for name, value in row.member.items() if name not in STATUS_COLUMNS}
        values |= {"updated_at": now, "member_key": known.member_id}
        if moves(row, known):
            moved.append(values | _NEW_ADDRESS | {"address_changed_at": now})
            elsewhere.append(known.member_id)
        else:
            kept.append(values)
    for rows in (kept, moved):
        if rows:  # one statement per set of columns
            session.execute(update(_MEMBER).where(_MEMBER.c.id == bindparam("member_key")), rows)
    taking = [row for row in changes if existing[row.nir].takes_pin(row)]
    pins = [
        {"member_key": existing[row.nir].member_id, "pin_hash": sealed, "pin_set_at": now}
        for row, sealed in zip(
            taking, _sealed(session, [row.pin_hash for row in taking]), strict=True
        )
    ]
    if pins:
        session.execute(
            update(_ACCOUNT).where(_ACCOUNT.c.member_id == bindparam("member_key")), pins
        )
    return elsewhere


def _sealed(session: Session, pin_hashes: list[str | None]) -> list[str | None]:
    """Carried-over PIN hashes as the checker passed them (`legacy:` and a hash it checked),
    sealed with the current pepper before they are stored (credentials/legacy.py); the
    peppers are read once for the batch, and only when it has one."""
    if not any(pin_hashes):
        return pin_hashes
    peppers = keyring(session).peppers
    return [
        None if value is None else seal_legacy_hash(value.removeprefix(LEGACY_PREFIX), peppers)
        for value in pin_hashes
    ]
