"""Search gives the same members in the same order on SQLite and PostgreSQL, whichever of
its two ways finds them (`search.find_members`): checked against a plain Python search on
each engine, and engine against engine when both are configured."""

import itertools
from collections.abc import Iterator

from sqlmodel import Session, select

from cpms_admin.members import records
from cpms_admin.members.search import find_members, search_terms, search_text, sort_name
from cpms_admin.models import Member
from tests.factories import make_member
from tests.harness import own_engine

LAST = ["N'Diaye", "d’Harcourt", "Œuvrard", "Ducœur", "de La Tour", "d'Arcy", "Martin", "Dupont"]
FIRST = ["Jean-Pierre", "Jean Pierre", "Élodie", "Zoé", "Anne"]
CITIES = [("69003", "Lyon"), ("42000", "Saint-Étienne"), ("75011", "Paris")]
SEARCHES = [
    "",
    "dupont lyon",
    "ndiaye",
    "n diaye",
    "d'harcourt",
    "oeuvrard",
    "ducoeur",
    "jean-pierre",
    "jean pierre",
    "de la tour",
    "ar",  # 2 letters: no trigram
    "e",
    "ar lyon",
    "dar",
    "pierre saint",
    "zz",
    "lyon zz",
]


def populate(session: Session) -> None:
    names = itertools.product(LAST, FIRST)
    for serial, ((last_name, first_name), (postcode, city)) in enumerate(
        zip(names, itertools.cycle(CITIES), strict=False)
    ):
        email = None if serial % 3 else f"{serial}@example.org"
        make_member(
            session,
            last_name=last_name,
            first_name=first_name,
            postcode=postcode,
            city=city,
            email=email,
            welcome=False,
        )


def by_python(members: list[Member], search: str, limit: int) -> list[int | None]:
    """What a search must answer, computed from the fields alone."""
    terms = search_terms(search)
    found = [m for m in members if all(term in search_text(m) for term in terms)]
    return [m.id for m in sorted(found, key=lambda m: (sort_name(m), m.id))][:limit]


def answers(session: Session) -> Iterator[tuple[str, int, int, list[int | None]]]:
    """Every search, with limits and walks that take each of find_members' two ways: the
    ids found (the same on both engines, each database being new)."""
    query = select(Member)
    for search, limit, walk in itertools.product(SEARCHES, (1, 4, 50), (0, 7, 2000)):
        terms = search_terms(search)
        if terms:
            found = find_members(session, query, terms, limit=limit, walk=walk)
        else:
            found = records.list_members(session, limit=limit)
        yield search, limit, walk, [m.id for m in found]


def test_search_answers_as_a_plain_python_search_would(session: Session) -> None:
    populate(session)
    members = list(session.exec(select(Member)))
    assert all(m.search_text == search_text(m) and m.sort_name == sort_name(m) for m in members)
    for search, limit, walk, found in answers(session):
        assert found == by_python(members, search, limit), (search, limit, walk)


def test_sqlite_and_postgresql_give_the_same_answers(both_urls: tuple[str, str]) -> None:
    results = []
    for url in both_urls:
        engine = own_engine(url)
        try:
            with Session(engine) as session:
                populate(session)
                results.append(list(answers(session)))
        finally:
            engine.dispose()
    sqlite, postgresql = results
    assert sqlite == postgresql
    assert any(found for *_, found in sqlite)
