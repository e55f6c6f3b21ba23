"""Migration 0006 on a database at 0004 that already has members: their folded columns are
recomputed, the search index is built over them, and the downgrade puts 0004 back; 0013 on
a database at 0012: the NIR taken out of `search_text`, and put back by its downgrade."""

import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from cpms_admin.audit_chain import keyed
from cpms_admin.db import current_revision, make_engine, migrate, upgrade_schema
from cpms_admin.errors import NotReady
from cpms_admin.members import views
from cpms_admin.members.nir import format_nir
from cpms_admin.members.search import search_values
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.models import Member
from cpms_admin.privacy.pseudonymise import BLANK, pseudonym_nir
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPERS
from tests.search_helpers import assert_search_index_in_step

NAMES = [
    ("N'Diaye", "Awa"),
    ("Œuvrard", "Jean-Pierre"),
    ("d’Harcourt", "Élodie"),
    ("Zola", "Émile"),
]
MEMBER_0004 = sa.table(
    "member",
    *map(
        sa.column,
        ("nir", "last_name", "first_name", "street", "postcode", "city", "country"),
    ),
    sa.column("search_text"),
    sa.column("status"),
    sa.column("created_at"),
    sa.column("updated_at"),
)


def fold_0004(text: str) -> str:
    """How revision 0004's code folded `search_text`."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


@pytest.fixture
def at_0004(empty_db_url: str) -> Iterator[Engine]:
    """A database at revision 0004 with members written as 0004's code wrote them, each
    with the account row it made beside them (which 0005's rebuild of `member` must keep)."""
    engine = keyed(make_engine(empty_db_url, must_exist=False), TEST_PEPPERS)
    migrate(engine, "0004")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for last_name, first_name in NAMES:
            nir = make_nir()
            conn.execute(
                sa.insert(MEMBER_0004).values(
                    nir=nir,
                    last_name=last_name,
                    first_name=first_name,
                    street="1 rue de la Paix",
                    postcode="75002",
                    city="Paris",
                    country="FR",
                    search_text=fold_0004(f"{last_name} {first_name} {nir}  Paris"),
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
        conn.execute(
            text(
                "INSERT INTO account (member_id, failed_attempts, captcha_required) "
                "SELECT id, 0, false FROM member"
            )
        )
    yield engine
    engine.dispose()


def test_upgrade_refolds_existing_members_and_indexes_them(at_0004: Engine) -> None:
    assert upgrade_schema(at_0004) == "0004"
    assert current_revision(at_0004) == HEAD_REVISION
    with at_0004.connect() as conn:  # the members' accounts kept, still pointing at them
        kept = "SELECT count(*) FROM account JOIN member ON member.id = account.member_id"
        assert conn.execute(text(kept)).scalar_one() == len(NAMES)
    with Session(at_0004) as session:
        members = list(session.exec(select(Member)))
        assert all(m.search_text == search_values(m)["search_text"] for m in members)
        assert all(m.sort_name == search_values(m)["sort_name"] for m in members)
        assert_search_index_in_step(session)
        for search, found in [
            ("ndiaye", "N'Diaye"),
            ("oeuvrard jean pierre", "Œuvrard"),
            ("d'harcourt", "d’Harcourt"),
            ("emile", "Zola"),
        ]:
            assert [m.last_name for m in views.list_members(session, search=search)] == [found]
        assert [m.last_name for m in views.list_members(session)] == [
            "d’Harcourt",
            "N'Diaye",
            "Œuvrard",
            "Zola",
        ]
        added = make_member(session, last_name="N’Dour", first_name="Youssou")
        assert views.list_members(session, search="ndour") == [added]  # kept in step


def test_a_row_pointing_at_no_row_stops_the_upgrade_and_changes_nothing(
    at_0004: Engine,
) -> None:
    """Foreign keys are off while SQLite migrates: they are checked before the commit, so a
    row left dangling (an edit in the sqlite3 shell, which does not enforce them) is named,
    and the schema stays as it was."""
    if at_0004.dialect.name != "sqlite":
        pytest.skip("PostgreSQL enforces foreign keys throughout")
    with at_0004.connect() as conn:
        conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        conn.execute(text("INSERT INTO account (member_id, failed_attempts, captcha_required) "
                          "VALUES (999, 0, false)"))  # fmt: skip
        conn.commit()
    with pytest.raises(NotReady, match=r"row [0-9]+ of account points at a row of member"):
        upgrade_schema(at_0004)
    assert current_revision(at_0004) == "0004"


def test_downgrade_restores_0004_and_upgrades_again(at_0004: Engine) -> None:
    with at_0004.connect() as conn:
        before = sorted(conn.execute(text("SELECT id, search_text FROM member")).all())
    upgrade_schema(at_0004)
    migrate(at_0004, "0004", down=True)
    with at_0004.connect() as conn:
        assert sorted(conn.execute(text("SELECT id, search_text FROM member")).all()) == before
        columns = {c["name"] for c in sa.inspect(conn).get_columns("member")}
        assert "sort_name" not in columns
        assert "member_search" not in sa.inspect(conn).get_table_names()
    upgrade_schema(at_0004)
    with Session(at_0004) as session:
        assert [m.last_name for m in views.list_members(session, search="ndiaye")] == ["N'Diaye"]
        assert_search_index_in_step(session)


@pytest.fixture
def at_0012(empty_db_url: str) -> Iterator[Engine]:
    """A database at revision 0012 whose members' `search_text` holds their NIR, as 0012's
    code wrote it."""
    engine = keyed(make_engine(empty_db_url, must_exist=False), TEST_PEPPERS)
    migrate(engine, "0012")
    with Session(engine) as session:
        for last_name, first_name in NAMES:
            member = make_member(session, last_name=last_name, first_name=first_name, welcome=False)
            words = search_values(member)["search_text"].split()
            words.insert(2, member.nir.lower())  # after the names
            member.search_text = " ".join(words)
            session.add(member)
        gone = make_member(session, last_name="Oublié", welcome=False)  # then pseudonymised
        session.execute(
            sa.update(Member)
            .where(Member.id == gone.id)  # type: ignore[arg-type]
            .values(
                **BLANK,
                nir=pseudonym_nir(gone.id or 0),
                status="closed",
                closed_at=datetime(2020, 1, 1, tzinfo=UTC),
                pseudonymised_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        session.commit()
    yield engine
    engine.dispose()


def test_0013_takes_the_nir_out_of_search_text_and_finds_it_from_its_start(
    at_0012: Engine,
) -> None:
    upgrade_schema(at_0012)
    with Session(at_0012) as session:
        members = list(session.exec(select(Member)))
        assert all(m.search_text == search_values(m)["search_text"] for m in members)
        assert not any(m.nir.lower() in m.search_text for m in members)
        blanked = [m for m in members if m.pseudonymised_at is not None]
        assert [(m.search_text, m.sort_name) for m in blanked] == [("", "")]
        assert_search_index_in_step(session)
        zola = next(m for m in members if m.last_name == "Zola")
        for search in (format_nir(zola.nir), zola.nir[:13], f"emile {zola.nir[:8]}"):
            assert views.list_members(session, search=search) == [zola], search
        assert views.list_members(session, search=zola.nir[4:12]) == []


def test_0013_downgrade_puts_the_nir_back(at_0012: Engine) -> None:
    upgrade_schema(at_0012)
    migrate(at_0012, "0012", down=True)
    with at_0012.connect() as conn:
        rows = conn.execute(
            text("SELECT nir, search_text FROM member WHERE pseudonymised_at IS NULL")
        ).all()
        assert rows and all(folded.startswith(f"{nir.lower()} ") for nir, folded in rows)
    upgrade_schema(at_0012)
    with Session(at_0012) as session:
        assert all(
            m.search_text == search_values(m)["search_text"] for m in session.exec(select(Member))
        )
        assert_search_index_in_step(session)
