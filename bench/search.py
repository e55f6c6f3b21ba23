"""`member list` with and without `--search` over N members, against the unindexed scan.

    .venv/bin/python bench/search.py [--members N] [--runs R] [--database-url URL]
                                     [--keep] [--reuse]

N members (default 1,000,000) with French names, particles and all, go into an upgraded
SQLite file under data/ (and, with `--database-url`, into a database of their own,
`cpms_bench_search_N`, on that PostgreSQL server), in batches of Core inserts of the values
`records.member_values` makes, so the search index is kept by the same triggers (SQLite)
or GIN index (PostgreSQL) as in use. Building a million takes a few minutes; `--keep` keeps
the databases and `--reuse` starts from them.

Each case is then timed in-process, median of R runs after one warm-up run:

- indexed: `views.list_members(search=..., limit=50)`, what `member list` runs;
- baseline: the same words as `search_text LIKE '%word%'` with nothing to narrow the
  rows first (written `search_text || ''` so PostgreSQL cannot use its index either), in
  the former order `ORDER BY last_name, first_name`: the query before the index.

It prints wall and CPU milliseconds (CPU of this process: on PostgreSQL most of the work
is the server's, so wall time is the figure to read there). The aim: under 200 ms indexed.
"""

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, col

from cpms_admin.db import make_engine, normalise_url, upgrade_schema
from cpms_admin.members.fields import MemberFields
from cpms_admin.members.postal import PostalAddress
from cpms_admin.members.records import member_values
from cpms_admin.members.search import search_terms
from cpms_admin.members.views import list_members
from cpms_admin.models import Member

DATA = Path(__file__).resolve().parent.parent / "data"
NOW = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
BATCH = 10_000
CASES = [  # (label, --search; None is a plain `member list`)
    ("member list (no search)", None),
    ('"dupont lyon"', "dupont lyon"),
    ('"girard" (6 letters)', "girard"),
    ('"gir" (3 letters)', "gir"),
    ('"mar" (3 letters, common)', "mar"),
    ('"nd" (2 letters)', "nd"),
    ('"qz" (2 letters, no match)', "qz"),
]

COMMON_LAST = """Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon
Michel Lefèvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine
Rousseau Vincent Müller Lefebvre Faure André Mercier Blanc Guérin Boyer Garnier Chevalier François
Legrand Gauthier Garcia Perrin Robin Clément Morin Nicolas Henry Roussel Mathieu Gautier Masson
Marchand Duval Denis Dumont Marie Lemaire Noël Meyer Dufour Meunier Brun Blanchard Giraud Joly
Rivière Lucas Brunet Gaillard Barbier Arnaud Martinez Gérard Roche Renard Schmitt Roy Leroux
Colin Vidal Caron Picard Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe
Bourgeois Pierre Benoît Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Dupuy Guillot
Hubert Berger Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury
Royer Klein Jacquet Adam Poirier Marty Aubry Guyot Carré Charles Renault Charpentier Ménard
Maillard Baron Bertin Bailly Hervé Schneider Fernandez Collet Léger Bouvier Julien Prévost
Millet Perrot Daniel Cousin Germain Breton Besson Langlois Rémy Pelletier Lévêque Perrier
Leblanc Barré Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier Michaud Rodriguez
Guichard Gillet Étienne Grondin Poulain Tessier Chevallier Collin Chauvin Bouchet Gay Lemaître
Bénard Maréchal Humbert Reynaud Antoine Hoarau Perret Barthélemy Cordier Pichon Lejeune Gilbert
Lamy Delaunay Pasquier Carlier Laporte"""
LAST = [
    *COMMON_LAST.split(),
    *("N'Diaye", "d’Harcourt", "Œuvrard", "Ducœur", "de La Tour", "d'Arcy", "Le Gall"),
    *("Le Goff", "Da Silva", "Saint-Exupéry", "Dupont-Aignan", "Le Nôtre"),
]
COMMON_FIRST = """Jean Marie Pierre Michel André Philippe Nicolas Alain Jacques Bernard Hélène Chloé
Zoé Inès Anaïs Loïc François Élodie Léa Manon Camille Sarah Emma Louise Jules Hugo Lucas Léo
Gabriel Raphaël Arthur Louis Paul Thomas Julie Nathalie Isabelle Sylvie Catherine Françoise
Monique Christine Valérie Sandrine Céline Aurélie Émilie Stéphanie Laurent Olivier Éric Sébastien
Frédéric Christophe Patrick Daniel Thierry Denis Gérard Yves Noël Maëlle Joëlle Agnès Cécile
Brigitte Jérôme Rémi Benoît Mathéo Noé Timothée Clémence Capucine Ophélie"""
FIRST = [*COMMON_FIRST.split(), "Jean-Pierre", "Jean Pierre", "Marie-Thérèse", "Anne-Sophie"]
CITIES = [
    ("75011", "Paris", 20),
    ("69003", "Lyon", 8),
    ("13008", "Marseille", 8),
    ("31000", "Toulouse", 5),
    ("06000", "Nice", 4),
    ("44000", "Nantes", 4),
    ("67000", "Strasbourg", 3),
    ("34000", "Montpellier", 3),
    ("33000", "Bordeaux", 3),
    ("59000", "Lille", 3),
    ("35000", "Rennes", 2),
    ("51100", "Reims", 2),
    ("42000", "Saint-Étienne", 2),
    ("83000", "Toulon", 2),
    ("38000", "Grenoble", 2),
    ("21000", "Dijon", 2),
    ("49000", "Angers", 2),
    ("30000", "Nîmes", 2),
    ("63000", "Clermont-Ferrand", 2),
    ("27000", "Évreux", 1),
    ("45000", "Orléans", 1),
    ("25000", "Besançon", 1),
    ("97400", "Saint-Denis", 1),
    ("64000", "Pau", 1),
    ("29200", "Brest", 1),
    ("87000", "Limoges", 1),
]
DOMAINS = ["exemple.fr", "courriel.fr", "laposte.net", "orange.fr"]


def nir(serial: int) -> str:
    body = f"{1 + serial % 2}{60 + serial % 40:02d}{1 + serial % 12:02d}"
    body += f"{serial // 1_000_000 % 90 + 1:02d}{serial // 1000 % 1000:03d}{serial % 1000:03d}"
    return f"{body}{97 - int(body) % 97:02d}"


def member_rows(count: int, seed: int = 13) -> Iterator[list[dict[str, object]]]:
    """The members in batches: names and cities drawn by a rough frequency (the first of
    each list more often), a third without e-mail, as `records.member_values` makes them."""
    draw = random.Random(seed)
    last_weights = [1 / (1 + rank / 20) for rank in range(len(LAST))]
    first_weights = [1 / (1 + rank / 10) for rank in range(len(FIRST))]
    stamps = {"status": "active", "created_at": NOW, "updated_at": NOW}
    batch: list[dict[str, object]] = []
    for serial in range(count):
        last = draw.choices(LAST, last_weights)[0]
        first = draw.choices(FIRST, first_weights)[0]
        postcode, city, _ = draw.choices(CITIES, [w for *_, w in CITIES])[0]
        email = None
        if serial % 3:
            email = f"m{serial}@{DOMAINS[serial % len(DOMAINS)]}"
        fields = MemberFields(
            nir=nir(serial),
            last_name=last,
            first_name=first,
            address=PostalAddress(f"{1 + serial % 120} rue de la République", postcode, city),
            civility="MME" if serial % 2 else "M",
            email=email,
        )
        batch.append({**member_values(fields), **stamps})
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def count_members(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Member)).scalar_one())


def populate(engine: Engine, count: int) -> float:
    started = time.perf_counter()
    upgrade_schema(engine)
    table = SQLModel.metadata.tables["member"]
    for batch in member_rows(count):
        with engine.begin() as conn:
            conn.execute(insert(table), batch)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def sqlite_engine(members: int, reuse: bool) -> tuple[Engine, Callable[[], None]]:
    path = DATA / f"bench-search-{members}.sqlite"
    if path.exists() and reuse:
        engine = make_engine(f"sqlite:///{path}")
        if count_members(engine) == members:
            return engine, lambda: path.unlink()
        engine.dispose()
    for stale in path.parent.glob(f"{path.name}*"):
        stale.unlink()
    engine = make_engine(f"sqlite:///{path}", must_exist=False)
    print(f"building SQLite {path.name} ... ", end="", flush=True)
    print(f"{populate(engine, members):.0f} s")

    def drop() -> None:
        engine.dispose()
        for made in path.parent.glob(f"{path.name}*"):
            made.unlink()

    return engine, drop


def postgresql_engine(url: str, members: int, reuse: bool) -> tuple[Engine, Callable[[], None]]:
    server = make_url(normalise_url(url))
    name = f"cpms_bench_search_{members}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    engine = make_engine(server.set(database=name).render_as_string(hide_password=False))

    def drop() -> None:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
    if exists and reuse and count_members(engine) == members:
        return engine, drop
    drop()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    print(f"building PostgreSQL {name} ... ", end="", flush=True)
    print(f"{populate(engine, members):.0f} s")
    return engine, drop


def baseline(session: Session, search: str | None, limit: int = 50) -> list[Member]:
    """The query before the index: a LIKE per word over every row, the raw names' order."""
    query = select(Member)
    for term in search_terms(search or ""):
        query = query.where(col(Member.search_text).concat("").contains(term, autoescape=True))
    order = (col(Member.last_name), col(Member.first_name))
    return list(session.exec(query.order_by(*order).limit(limit)))


def timed(engine: Engine, runs: int, call: Callable[[Session], list[Member]]) -> tuple[float, ...]:
    """Median wall and CPU milliseconds of `call` (each run in a fresh session), and the
    number of members found."""
    walls, cpus, found = [], [], 0
    for run in range(runs + 1):
        with Session(engine) as session:
            wall, cpu = time.perf_counter(), time.process_time()
            found = len(call(session))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if run:  # the first run warms the caches
            walls.append(wall * 1000)
            cpus.append(cpu * 1000)
    return statistics.median(walls), statistics.median(cpus), found


def report(label: str, engine: Engine, runs: int) -> None:
    print(f"\n{label}: {count_members(engine):,} members, median of {runs} runs, limit 50")
    heading = f"{'indexed wall':>13} {'CPU':>7} {'baseline wall':>14} {'CPU':>7} {'found':>6}"
    print(f"{'case':30} {heading}")
    for name, search in CASES:
        new = timed(engine, runs, lambda s, q=search: list_members(s, search=q))
        old = timed(engine, runs, lambda s, q=search: baseline(s, q))
        assert new[2] == old[2], (name, new, old)  # same rows found, whatever their order
        print(
            f"{name:30} {new[0]:10.1f} ms {new[1]:7.1f} {old[0]:11.1f} ms {old[1]:7.1f} {new[2]:6}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", help="a PostgreSQL server to measure as well")
    parser.add_argument("--keep", action="store_true", help="keep the databases built")
    parser.add_argument("--reuse", action="store_true", help="start from kept databases")
    args = parser.parse_args()
    engines = [("SQLite", *sqlite_engine(args.members, args.reuse))]
    if args.database_url:
        server = postgresql_engine(args.database_url, args.members, args.reuse)
        engines.append(("PostgreSQL", *server))
    try:
        for label, engine, _ in engines:
            report(label, engine, args.runs)
    finally:
        for _, engine, drop in engines:
            engine.dispose()
            if not args.keep:
                drop()


if __name__ == "__main__":
    main()
