"""The bulk write paths of a large import (speed: bench/scale_bulk.py): rows stored exactly as
Core stores them, more rows than one statement takes, a key already there refused as Core
refuses it, members' audit events sealed as a group exactly as one by one, the NIRs a file
repeats found across batches, and members imported in bulk found by search."""

import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, func

from cpms_admin.audit_chain.form import Keyring, canonical
from cpms_admin.audit_chain.group import COLUMNS, EventGroup, seal_group
from cpms_admin.bulk.formats import read_member_rows
from cpms_admin.bulk.import_rows import SeenNirs
from cpms_admin.bulk.importer import import_members
from cpms_admin.db_insert import insert_rows
from cpms_admin.members.views import list_members
from cpms_admin.models import pk
from cpms_admin.pepper import Peppers
from tests.factories import make_member
from tests.import_helpers import person, write_csv

LETTER = SQLModel.metadata.tables["letter"]
MEMBER = SQLModel.metadata.tables["member"]
MOMENT = datetime(2026, 11, 23, 22, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "moment", [MOMENT, MOMENT.astimezone(ZoneInfo("Europe/Paris"))], ids=["utc", "paris"]
)
def test_rows_are_stored_as_core_stores_them(session: Session, moment: datetime) -> None:
    owner = pk(make_member(session, welcome=False))
    if session.get_bind().dialect.name == "postgresql":  # a binary COPY ignores it; Core not
        session.connection().exec_driver_sql("SET TIME ZONE 'America/New_York'")
    values = {"member_id": owner, "kind": "welcome", "purpose": "first_login"}
    values |= {"status": "pending", "created_at": moment, "printed_at": None}
    session.execute(insert(LETTER), [values])
    insert_rows(session.connection(), LETTER, tuple(values), [tuple(values.values())])
    session.commit()
    # As the driver reads them back: SQLite's text, PostgreSQL's types.
    raw = session.connection().exec_driver_sql(
        "SELECT member_id, kind, purpose, status, created_at, printed_at FROM letter ORDER BY id"
    )
    core, ours = raw.all()
    assert core == ours


def test_more_rows_than_one_statement_takes(session: Session) -> None:
    owner = pk(make_member(session, welcome=False))
    rows = [(owner, "welcome", "first_login", "pending", MOMENT)] * 12_000  # SQLite: 2 INSERTs
    columns = ("member_id", "kind", "purpose", "status", "created_at")
    insert_rows(session.connection(), LETTER, columns, rows)
    session.commit()
    assert session.execute(select(func.count()).select_from(LETTER)).scalar_one() == 12_000


def test_a_key_already_there_is_refused_as_core_refuses_it(session: Session) -> None:
    taken = make_member(session, welcome=False)
    row = {name: getattr(taken, name) for name in ("nir", "last_name", "first_name")}
    row |= {"street": "1 rue de la Paix", "postcode": "75002", "city": "Paris"}
    row |= {"country": "FR", "status": "active", "created_at": MOMENT, "updated_at": MOMENT}
    with pytest.raises(IntegrityError):
        insert_rows(session.connection(), MEMBER, tuple(row), [tuple(row.values())])
    session.rollback()


def test_a_group_of_members_events_is_sealed_as_each_event_alone() -> None:
    keys = Keyring(Peppers({1: b"pepper one", 2: b"pepper two"}, "test"))
    shared = {
        "at": MOMENT,
        "agent": "rené.lévêque",
        "label": 'ticket "MIG-42" \\ été',
        "action": "members.import.member",
        "reason": "reprise « 2026 » d'un système: l'ancien",
        "outcome": "ok",
        "details": json.dumps({"change": "created", "run": 7}, ensure_ascii=False),
    }
    group = EventGroup(shared, ids=[101, 102, 103], member_ids=[5, 9, 12])
    rows, seq, last = seal_group(group, keys, 2, 40, "ab" * 32)
    previous = "ab" * 32
    for at, row in enumerate(rows):
        event = dict(zip(COLUMNS, row, strict=True))
        assert (event["seq"], event["prev_hash"], event["key_id"]) == (41 + at, previous, 2)
        assert event["hash"] == keys.event_hash(2, canonical(event))
        previous = event["hash"]
    assert (seq, last) == (43, previous)


def test_nirs_seen_are_found_in_later_batches_and_corsica_stays_apart() -> None:
    seen = SeenNirs()
    try:
        assert seen.claim({"185052A00608410": 2, "185052100608491": 3}) == {}
        later = {"185052A00608410": 7, "185052B00608489": 8}
        assert seen.claim(later) == {"185052A00608410": 2}  # 2B is not 2A
        assert seen.claim({"185052100608491": 9, "185052B00608489": 10}) == {
            "185052100608491": 3,
            "185052B00608489": 8,
        }
    finally:
        seen.close()


def test_members_imported_in_bulk_are_found_by_search(session: Session, tmp_path: Path) -> None:
    rows = [person(n, last_name="Ndiaye", city="Lyon", postcode="69003") for n in range(1, 4)]
    rows.append(person(4, last_name="Martin"))
    path = write_csv(tmp_path / "m.csv", rows)
    counts = import_members(session, member_file=read_member_rows(path), agent="test", batch_size=3)
    assert counts.created == 4
    session.rollback()
    found = list_members(session, search="n'diaye lyon", limit=None)
    assert sorted(member.nir for member in found) == sorted(row["nir"] for row in rows[:3])
    birth = session.execute(select(MEMBER.c.birth_date).limit(1)).scalar_one()
    assert birth == date(1985, 5, 12)
    if session.get_bind().dialect.name == "sqlite":  # what Core writes: text, no offset
        stored = session.connection().exec_driver_sql("SELECT created_at FROM member").scalar()
        assert isinstance(stored, str) and "+" not in stored
    assert session.execute(text("SELECT count(*) FROM account")).scalar_one() == 4
