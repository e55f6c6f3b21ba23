"""Member search and sort fitted to French names, through `member list` and the service, on
every configured engine; the same answers on both (tests/test_search_engines.py)."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from cpms_admin.bulk.export import members_to_export
from cpms_admin.members import records, views
from cpms_admin.members.nir import format_nir
from cpms_admin.members.search import find_members, fold, search_terms, search_values
from cpms_admin.models import Account, Member
from cpms_admin.privacy.pseudonymise import due_members
from cpms_admin.vocabulary import MemberStatus
from tests.factories import make_member, make_nir
from tests.harness import Cli, FakeClock
from tests.import_helpers import person, write_csv
from tests.search_helpers import (
    assert_search_index_in_step,
    plan_of_last_query,
    plan_of_search,
    search_index_ids,
)


@pytest.mark.parametrize(
    ("typed", "folded"),
    [
        ("d’Harcourt", "dharcourt"),
        ("d'Harcourt", "dharcourt"),
        ("dʼHarcourt", "dharcourt"),
        ("d`Harcourt", "dharcourt"),
        ("d´Harcourt", "dharcourt"),
        ("d‘Harcourt", "dharcourt"),
        ("N'Diaye", "ndiaye"),
        ("N Diaye", "ndiaye"),
        ("Œuvrard", "oeuvrard"),
        ("DUCŒUR", "ducoeur"),
        ("Lætitia", "laetitia"),
        ("Strauß", "strauss"),
        ("Jean-Pierre", "jeanpierre"),
        ("Jean–Pierre", "jeanpierre"),  # en dash
        ("Jean Pierre", "jeanpierre"),
        ("J.-P.", "jp"),
        ("Élodie", "elodie"),
        ("Müller", "muller"),
        ("de La Tour", "delatour"),
        ("ǼLFRED Ǿ", "aelfredo"),  # Æ and Ø, which Unicode does not decompose, with an accent
    ],
)
def test_fold_drops_accents_case_apostrophes_hyphens_dots_and_spaces(
    typed: str, folded: str
) -> None:
    assert fold(typed) == folded


@pytest.mark.slow
@given(st.text())
def test_folding_twice_changes_nothing_and_leaves_no_separator(text: str) -> None:
    """A word typed already folded finds what its unfolded spelling finds."""
    folded = fold(text)
    assert fold(folded) == folded
    assert not any(ch.isspace() or ch in "'’-." for ch in folded)


def test_search_words_are_folded_and_a_nir_with_separators_is_one_word() -> None:
    assert search_terms("d’Harcourt  LYON") == ["dharcourt", "lyon"]
    assert search_terms("n diaye") == ["n", "diaye"]
    assert search_terms("jean-pierre") == ["jeanpierre"]
    assert search_terms("1 85 05 75 001 001") == ["1850575001001"]
    assert search_terms("martin 1 85 05 2a") == ["martin", "185052a"]
    assert search_terms("awa 1985 ba") == ["awa", "1985", "ba"]  # Ba is a name
    assert search_terms("- ' .") == []


def test_a_name_or_an_address_pasted_with_its_punctuation_is_found(
    cli: Cli, session: Session
) -> None:
    """`MARTIN, Jean` as a file lists names, an e-mail as a mail client shows it: the comma,
    brackets and quotes separate words, they are not part of them."""
    member = make_member(session, last_name="Martin", first_name="Jean", email="jean.m@exemple.fr")
    for pasted in ("MARTIN, Jean", "Jean <jean.m@exemple.fr>", "jean.m@exemple.fr,", '"Martin"'):
        found = json.loads(cli("--json", "member", "list", "--search", pasted).stdout)
        assert [row["nir"] for row in found] == [member.nir], pasted


def test_the_folded_columns_keep_one_word_per_field() -> None:
    member = Member(
        nir="185057500100195",
        last_name="d’Harcourt",
        first_name="Jean-Pierre",
        email="jp.dharcourt@example.org",
        city="Saint-Étienne",
    )
    assert search_values(member) == {
        "search_text": "dharcourt jeanpierre jpdharcourt@exampleorg saintetienne",
        "sort_name": "dharcourt jeanpierre",
    }
    nameless = Member(nir="X00000000000042", last_name="", first_name="", city="")
    assert search_values(nameless) == {"search_text": "", "sort_name": ""}  # as pseudonymised


FRENCH_NAMES = [
    ("N'Diaye", "Awa"),
    ("d’Harcourt", "Louis"),
    ("Œuvrard", "Claire"),
    ("Ducœur", "Marc"),
    ("Martin", "Jean Pierre"),
    ("Bernard", "Jean-Pierre"),
    ("Dupont", "Hélène"),
]


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("ndiaye", ["N'Diaye"]),
        ("n diaye", ["N'Diaye"]),
        ("n'diaye", ["N'Diaye"]),
        ("N’DIAYE", ["N'Diaye"]),
        ("d'harcourt", ["d’Harcourt"]),
        ("dharcourt", ["d’Harcourt"]),
        ("d’harcourt louis", ["d’Harcourt"]),
        ("oeuvrard", ["Œuvrard"]),
        ("œuvrard", ["Œuvrard"]),
        ("ducoeur", ["Ducœur"]),
        ("jean-pierre", ["Bernard", "Martin"]),  # finds Jean Pierre too
        ("jean pierre", ["Bernard", "Martin"]),  # finds Jean-Pierre too
        ("jeanpierre", ["Bernard", "Martin"]),
        ("jean–pierre martin", ["Martin"]),
        ("helene", ["Dupont"]),
        ("di", ["N'Diaye"]),  # shorter than a trigram: tested on every row, same answer
        ("ha lo", ["d’Harcourt"]),
        ("oeu", ["Ducœur", "Œuvrard"]),
        ("zz", []),
        ("ndiaye zz", []),
    ],
)
def test_member_list_finds_french_names_however_typed(
    cli: Cli, session: Session, search: str, found: list[str]
) -> None:
    for last_name, first_name in FRENCH_NAMES:
        make_member(session, last_name=last_name, first_name=first_name, email=None)
    result = cli("--json", "member", "list", "--search", search)
    assert result.exit_code == 0, result.output
    assert [row["last_name"] for row in json.loads(result.stdout)] == found


def test_search_by_nir_email_and_city_and_wildcards_taken_literally(session: Session) -> None:
    helene = make_member(
        session, email="h.muller@example.org", city="Saint-Étienne", postcode="42000"
    )
    make_member(session, last_name="Durand", email="paul_durand@example.org", city="Lyon")
    for search in (format_nir(helene.nir), "h.muller@example", "saint etienne", "etienne"):
        assert [m.nir for m in views.list_members(session, search=search)] == [helene.nir]
    assert views.list_members(session, search="100%") == []
    assert views.list_members(session, search="h_muller") == []


@pytest.mark.parametrize("search", ["", "'", '"', " - ", "@", "%", "_ *"])
def test_a_search_with_nothing_to_look_for_lists_no_one(
    cli: Cli, session: Session, search: str
) -> None:
    """A script's empty variable, a quote pasted alone, `@` (every member with an e-mail):
    exit 2, not a listing."""
    make_member(session)
    result = cli("--json", "member", "list", "--search", search)
    assert result.exit_code == 2
    error = json.loads(result.stdout)  # the error's document, no listing
    assert "holds no letter or digit to look for" in error["error"]


SORTED = [
    ("Bernard", "Zoé"),
    ("d'Arcy", "Anne"),
    ("de La Tour", "Paul"),
    ("Dupont", "Élodie"),
    ("Dupont", "Emma"),
    ("Dupont-Aignan", "Anne"),
    ("Éluard", "Paul"),
    ("le Brun", "Marc"),
    ("Le Goff", "Yann"),
    ("Œuvrard", "Claire"),
    ("Zola", "Émile"),
]


def test_member_list_sorts_particles_and_accents_under_their_letter(
    cli: Cli, session: Session
) -> None:
    for last_name, first_name in reversed(SORTED):
        make_member(session, last_name=last_name, first_name=first_name, email=None)
    rows = json.loads(cli("--json", "member", "list").stdout)
    assert [(row["last_name"], row["first_name"]) for row in rows] == SORTED
    searched = json.loads(cli("--json", "member", "list", "--search", "a").stdout)
    assert [row["last_name"] for row in searched] == [
        name for name, first in SORTED if "a" in fold(name + first)
    ]


def test_namesakes_are_listed_in_the_order_they_were_added(session: Session) -> None:
    added = [make_member(session, last_name="Martin", first_name="Anne") for _ in range(3)]
    assert views.list_members(session) == added
    assert views.list_members(session, search="martin anne", limit=2) == added[:2]


def test_an_update_changes_what_search_finds_and_the_order(session: Session) -> None:
    member = make_member(session, last_name="Zola", first_name="Émile")
    make_member(session, last_name="Martin", first_name="Anne")
    records.update_member(session, nir=member.nir, changes={"last_name": "N’Diaye"}, agent="alice")
    assert [m.last_name for m in views.list_members(session, search="ndiaye")] == ["N’Diaye"]
    assert views.list_members(session, search="zola") == []
    assert [m.last_name for m in views.list_members(session)] == ["Martin", "N’Diaye"]
    assert_search_index_in_step(session)
    if session.get_bind().dialect.name == "sqlite":  # the old name left the FTS5 table
        assert search_index_ids(session, "zola") == set()
        assert search_index_ids(session, "ndiaye") == {member.id}


def test_words_of_three_letters_or_more_go_through_the_search_index(session: Session) -> None:
    make_member(session, last_name="N'Diaye")
    assert_search_index_in_step(session)
    if session.get_bind().dialect.name == "sqlite":
        assert "member_search VIRTUAL TABLE" in plan_of_search(session, "ndiaye lyon")
        assert "VIRTUAL TABLE" not in plan_of_search(session, "nd")  # no trigram in 2 letters
    else:
        assert "ix_member_search_text_trgm" in plan_of_search(session, "ndiaye lyon")


def test_a_nir_is_found_from_its_start_and_digits_in_an_e_mail_anywhere(
    session: Session,
) -> None:
    """The NIR is not in search_text (migration 0013): a word that could begin one finds
    the NIRs starting with it, through the NIR's index, and still finds e-mails holding it."""

    def member(nir: str, last_name: str, email: str | None = None) -> Member:
        return make_member(session, nir=nir, last_name=last_name, email=email)

    corsican = member(make_nir(6084, department="2A"), "Colonna")
    paris = member(make_nir(6085, department="75"), "Martin")
    after = member(make_nir(1, year=86), "Durand")
    mailed = member(make_nir(7, sex=2, year=90), "Petit", "jp1850@example.org")
    for search, found in [
        (format_nir(corsican.nir), [corsican]),
        ("1 85 05 2a", [corsican]),
        ("185052A006", [corsican]),
        ("1 85 05 75 006", [paris]),
        ("185", [corsican, paris, mailed]),  # NIRs and an e-mail, in name order
        ("1859", []),  # up to 1859999..., not past it to 186
        ("18", [corsican, after, paris, mailed]),
        ("martin 1 85", [paris]),
        (paris.nir[5:12], []),  # the middle of a NIR finds nothing
        ("jp1850", [mailed]),
    ]:
        for walk in (0, 2000):  # both of find_members' ways
            terms = search_terms(search)
            listed = find_members(session, select(Member), terms, limit=50, walk=walk)
            assert [m.nir for m in listed] == [m.nir for m in found], (search, walk)
    assert_search_index_in_step(session)


def test_digits_of_other_scripts_are_words_not_nir_starts(cli: Cli, session: Session) -> None:
    """A NIR is ASCII digits: `١٢٣` (Arabic-Indic) is a word like any other, found nowhere."""
    make_member(session, nir=make_nir(1), last_name="Haddad")
    assert search_terms("١٢٣ ٤") == ["١٢٣", "٤"]
    for search in ("١٢٣", "١ ٨٥", "١٨٥"):
        result = cli("--json", "member", "list", "--search", search)
        assert (result.exit_code, json.loads(result.stdout)) == (0, []), result.output


def test_a_nir_start_goes_through_the_nir_index(session: Session) -> None:
    make_member(session, last_name="N'Diaye")
    plan = plan_of_search(session, "1 85 05")
    assert "ix_member_nir" in plan, plan
    if session.get_bind().dialect.name == "postgresql":
        assert "ix_member_search_text_trgm" in plan, plan  # and e-mails holding the digits
    else:
        assert "member_search VIRTUAL TABLE" in plan, plan
        both = plan_of_search(session, "lyon 1 85 05")  # each term narrows: neither scans
        assert "ix_member_nir" in both, both
        assert not re.search(r"^SCAN member( |$)", both, flags=re.MULTILINE), both


def test_one_status_is_listed_in_name_order_through_an_index(session: Session) -> None:
    """Closed members through their own partial index (migration 0014), active ones through
    the name index: neither listing reads and sorts every member of its status."""
    for first_name in ("Chloé", "Awa", "Binta", "Denise"):
        make_member(session, last_name="N'Diaye", first_name=first_name)
    for nir in [m.nir for m in views.list_members(session)][1::2]:  # Binta and Denise
        records.close_member(session, nir=nir, reason="départ", agent="alice")
    for status, names, index in [
        ("closed", ["Binta", "Denise"], "ix_member_closed_sort_name"),
        ("active", ["Awa", "Chloé"], "ix_member_sort_name"),
    ]:
        listed = views.list_members(session, status=status)
        assert [m.first_name for m in listed] == names
        plan = plan_of_last_query(
            session, lambda: views.list_members(session, status=status), index_scans=True
        )
        assert re.search(rf"\b{index}\b", plan), plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # already in name order


def test_the_closed_members_index_serves_their_export_and_the_retention_batches(
    session: Session,
) -> None:
    """`members export --status closed` and the retention job's batches find the closed
    members through their own index (migration 0014), not by reading every member."""
    members = [make_member(session, nir=make_nir(serial)) for serial in (3, 1, 2)]
    for member in members[:2]:
        records.close_member(session, nir=member.nir, reason="départ", agent="alice")
    exported = session.execute(members_to_export(MemberStatus.closed)).all()
    assert [row.nir for row in exported] == sorted(m.nir for m in members[:2])  # NIR order
    later = max(m.closed_at for m in members[:2] if m.closed_at) + timedelta(seconds=1)
    assert sorted(due_members(session, later)) == sorted(m.id for m in members[:2])
    session.rollback()
    for run in (
        lambda: session.execute(members_to_export(MemberStatus.closed)).all(),
        lambda: due_members(session, later),
    ):
        plan = plan_of_last_query(session, run, index_scans=True)
        assert "ix_member_closed_sort_name" in plan, plan
        session.rollback()


def test_search_keeps_the_status_and_locked_filters(session: Session, clock: FakeClock) -> None:
    locked = make_member(session, last_name="N'Diaye", first_name="Awa")
    make_member(session, last_name="N'Diaye", first_name="Binta")
    closed = make_member(session, last_name="N'Diaye", first_name="Coumba")
    records.close_member(session, nir=closed.nir, reason="départ", agent="alice")
    account = session.get(Account, locked.id)
    assert account is not None
    account.hard_locked_at = clock()
    session.commit()
    for walk in (0, 2000):  # both of find_members' ways
        query = views.member_query(status="closed", locked=False, clock=clock)
        found = find_members(session, query, ["ndiaye"], limit=50, walk=walk)
        assert [m.first_name for m in found] == ["Coumba"]
        query = views.member_query(status=None, locked=True, clock=clock)
        found = find_members(session, query, ["ndiaye"], limit=50, walk=walk)
        assert [m.first_name for m in found] == ["Awa"]
    active = views.list_members(session, status="active", search="ndiaye", clock=clock)
    assert [m.first_name for m in active] == ["Awa", "Binta"]


def test_members_import_keeps_the_search_index_in_step(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Import inserts and `--on-conflict update` rewrite the folded columns in bulk."""
    path = write_csv(
        tmp_path / "m.csv", [person(70, last_name="d’Harcourt", city="Évreux", postcode="27000")]
    )
    assert cli("members", "import", str(path)).exit_code == 0
    found = json.loads(cli("--json", "member", "list", "--search", "dharcourt evreux").stdout)
    assert [row["last_name"] for row in found] == ["d’Harcourt"]
    moved = write_csv(
        tmp_path / "moved.csv", [person(70, last_name="N'Diaye", city="Lyon", postcode="69002")]
    )
    assert cli("members", "import", str(moved), "--on-conflict", "update").exit_code == 0
    assert json.loads(cli("--json", "member", "list", "--search", "dharcourt").stdout) == []
    found = json.loads(cli("--json", "member", "list", "--search", "n diaye lyon").stdout)
    assert [row["last_name"] for row in found] == ["N'Diaye"]
    session.rollback()  # see the import's rows
    assert_search_index_in_step(session)
    if session.get_bind().dialect.name == "sqlite":
        assert search_index_ids(session, "dharcourt") == set()
