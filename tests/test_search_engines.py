"""Search gives the same members in the same order on SQLite and PostgreSQL, whichever of
its two ways finds them (`search.find_members`): checked against a plain Python search on
each engine, and engine against engine when both are configured. So do the other listings
agents filter: `member list --locked` and `--status` (with and without a search) and
`audit list --nir`, through the CLI."""

import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session, select

from cpms_admin import audit
from cpms_admin.members import views
from cpms_admin.members.search import (
    could_start_nir,
    find_members,
    search_terms,
    search_values,
)
from cpms_admin.models import Account, Member
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import MemberStatus
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, Cli, FakeClock, own_engine

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
    "1 85 05 75 998 00",  # NIRs from their start (members 1 to 9)
    "185057599801",
    "martin 1850575",
    "12",  # an e-mail holding it (no NIR starts with it)
    "1",  # every NIR, and the e-mails holding a 1
    "9980",  # the middle of NIRs: nothing
]


def populate(session: Session) -> None:
    names = itertools.product(LAST, FIRST)
    for serial, ((last_name, first_name), (postcode, city)) in enumerate(
        zip(names, itertools.cycle(CITIES), strict=False)
    ):
        email = None if serial % 3 else f"{serial}@example.org"
        make_member(
            session,
            nir=make_nir(serial + 1),  # the same on both engines
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
    found = [m for m in members if all(holds(m, term) for term in terms)]
    return [m.id for m in sorted(found, key=lambda m: (search_values(m)["sort_name"], m.id))][
        :limit
    ]


def holds(member: Member, term: str) -> bool:
    """The member's folded fields hold the term, or their NIR starts with it."""
    return term in search_values(member)["search_text"] or (
        could_start_nir(term) and member.nir.startswith(term.upper())
    )


def answers(session: Session) -> Iterator[tuple[str, int, int, list[int | None]]]:
    """Every search, with limits and walks that take each of find_members' two ways: the
    ids found (the same on both engines, each database being new)."""
    query = select(Member)
    for search, limit, walk in itertools.product(SEARCHES, (1, 4, 50), (0, 7, 2000)):
        terms = search_terms(search)
        if terms:
            found = find_members(session, query, terms, limit=limit, walk=walk)
        else:
            found = views.list_members(session, limit=limit)
        yield search, limit, walk, [m.id for m in found]


def test_search_answers_as_a_plain_python_search_would(session: Session) -> None:
    populate(session)
    members = list(session.exec(select(Member)))
    assert all(
        m.search_text == search_values(m)["search_text"]
        and m.sort_name == search_values(m)["sort_name"]
        for m in members
    )
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


# `member list --locked` / `--status` and `audit list --nir`, through the CLI, on each engine
# against the order the fields dictate, and engine against engine (issue 18: the queries
# behind them were rewritten to be served by indexes at a million members).
LISTINGS = [
    ("--locked",),
    ("--locked", "--limit", "2"),
    ("--status", "closed"),
    ("--status", "active", "--limit", "7"),
    ("--status", "active", "--locked"),
    ("--locked", "--search", "jean"),
    ("--status", "closed", "--search", "ar"),
    ("--search", "dupont lyon"),
]


def populate_states(session: Session, now: datetime) -> dict[str, set[str]]:
    """Members with every lock state and both statuses, each with audit events: the NIRs
    that are locked (hard, or cooling down at `now`) and closed."""
    states: dict[str, set[str]] = {"locked": set(), "closed": set()}
    names = itertools.product(LAST, FIRST)
    for serial, ((last_name, first_name), (postcode, city)) in enumerate(
        zip(names, itertools.cycle(CITIES), strict=False), start=1
    ):
        member = make_member(
            session,
            nir=make_nir(serial),
            last_name=last_name,
            first_name=first_name,
            postcode=postcode,
            city=city,
            welcome=False,
        )
        account = session.get(Account, member.id)
        assert account is not None
        lock = serial % 5
        if lock == 1:  # hard-locked (its cool-down long over)
            account.hard_locked_at = now - timedelta(days=3)
            account.locked_until = now - timedelta(days=3)
        elif lock == 2:  # cooling down now
            account.locked_until = now + timedelta(seconds=30)
        elif lock == 3:  # a cool-down that ended: not locked
            account.locked_until = now - timedelta(seconds=1)
        if lock in (1, 2):
            states["locked"].add(member.nir)
        if serial % 7 == 0:
            member.status = MemberStatus.closed
            states["closed"].add(member.nir)
        for action in ("account.unlock", "pin.reset")[: serial % 3]:
            audit.record(session, agent="factory", action=action, member=member, at=now)
        session.commit()
    return states


def listing_answers(cli: Cli) -> dict[str, list[str]]:
    """What each listing prints (`--json`): the NIRs of `member list`, the ids, actions and
    NIRs of `audit list --nir`."""
    found: dict[str, list[str]] = {}
    for options in LISTINGS:
        result = cli("--json", "member", "list", *options)
        assert result.exit_code == 0, result.output
        found[" ".join(options)] = [row["nir"] for row in json.loads(result.stdout)]
    for serial in (1, 2, 6):
        for limit in (["--limit", "1"], ["--all"]):
            result = cli("--json", "audit", "list", "--nir", make_nir(serial), *limit)
            assert result.exit_code == 0, result.output
            events = json.loads(result.stdout)
            found[f"audit {serial} {limit}"] = [
                f"{e['id']} {e['action']} {e['nir']}" for e in events
            ]
    return found


def engine_cli(url: str, tmp_path: Path, clock: FakeClock) -> Cli:
    settings = Settings(
        database_url=url,
        pepper=TEST_PEPPER,
        mail_dir=str(tmp_path / "outbox"),
        audit_archive_dir=str(tmp_path / "archive"),
    )
    return Cli(settings, clock)


def test_listings_follow_the_name_order_and_the_states(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    cli = engine_cli(db_url, tmp_path, clock)
    engine = own_engine(db_url)
    try:
        with Session(engine) as session:
            states = populate_states(session, clock.now)
            members = {m.nir: m for m in session.exec(select(Member))}
    finally:
        engine.dispose()
    by_name = sorted(members.values(), key=lambda m: (search_values(m)["sort_name"], m.id))
    found = listing_answers(cli)
    locked = [m.nir for m in by_name if m.nir in states["locked"]]
    closed = [m.nir for m in by_name if m.nir in states["closed"]]
    active = [m.nir for m in by_name if m.nir not in states["closed"]]
    assert found["--locked"] == locked
    assert found["--locked --limit 2"] == locked[:2]
    assert found["--status closed"] == closed
    assert found["--status active --limit 7"] == active[:7]
    assert found["--status active --locked"] == [n for n in locked if n not in states["closed"]]
    jeans = [n for n in locked if "jean" in search_values(members[n])["search_text"]]
    assert found["--locked --search jean"] == jeans
    assert found["audit 1 ['--limit', '1']"] == [found["audit 1 ['--all']"][0]]
    newest_first = [int(event.split()[0]) for event in found["audit 2 ['--all']"]]
    assert newest_first == sorted(newest_first, reverse=True) and len(newest_first) == 3


def test_sqlite_and_postgresql_list_the_same_members_and_events(
    both_urls: tuple[str, str], tmp_path: Path
) -> None:
    results = []
    for number, url in enumerate(both_urls):
        clock = FakeClock()
        cli = engine_cli(url, tmp_path / str(number), clock)
        engine = own_engine(url)
        try:
            with Session(engine) as session:
                populate_states(session, clock.now)
        finally:
            engine.dispose()
        results.append(listing_answers(cli))
    sqlite, postgresql = results
    assert sqlite == postgresql
    assert all(sqlite.values())
