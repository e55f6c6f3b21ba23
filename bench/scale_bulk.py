"""A million members in bulk: import, export and campaign through the CLI, on SQLite and
PostgreSQL side by side, each against a bare baseline of the same work in the same run.

    .venv/bin/python bench/scale_bulk.py [--members N] [--engines sqlite,postgresql]

N members (default 1,000,000) are generated as a `;`-separated UTF-8 CSV (a third without
e-mail, names and towns repeating as in a real file, streets and e-mails varied). Then, on
each engine, a fresh database (SQLite: a file; PostgreSQL: a database created on the
server of `CPMS_TEST_DATABASE_URL` or `--postgresql`, dropped at the end):

- `members import FILE` through the installed `cpms-admin` (everything: parsing, the `member
  add` checks, accounts, an audit event per member sealed into the chain, the search index),
  against the bare load of the same member rows into an empty member table of a fresh
  database (its indexes and search index included): SQLite `executemany` (with the
  connection settings cpms-admin uses, `db.SQLITE_PRAGMAS`), PostgreSQL `COPY`, a commit
  every 10,000 rows, only the insert timed;
- `members export --out FILE` (CSV), against a bare `SELECT` of the same columns in the
  same order streamed to a `csv.writer`;
- `code campaign --no-pin --channel post` over every member (a letter each, an audit event
  each), against one bare `INSERT ... SELECT` of the same letters; each on its own copy of
  the imported database.

For the commands: wall seconds, rows/s, CPU ms per row of the command's process tree (the
import's checker included: `os.wait4`) and its peak RSS (procs.HighWater); on PostgreSQL also the
server's CPU ms per row when the server runs on this machine (its ended backends' CPU, read
from the postmaster's /proc entry). The figures to compare on a shared machine are the CPU per row
and the same-run ratios. `main()` returns them (bench/scale.py calls it).
"""

import argparse
import csv
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from procs import CLOCK_TICKS, HighWater, stat_fields
from sqlalchemy.engine import make_url

from cpms_admin.db import SQLITE_PRAGMAS

BIN = Path(sys.executable).parent
CLI = str(BIN / "cpms-admin")
BATCH = 10_000
FIRST = ["Jean", "Hélène", "François", "Chloé", "Loïc", "Anaïs", "Zoé", "Inès", "Marc", "Léa"]
FIRST += ["Éric", "Manon", "Noël", "Camille", "Gaëlle", "Hugo", "Maëlys", "Théo", "Océane"]
LAST = ["Martin", "Bernard", "Dubois", "Lefèvre", "Müller", "Da Silva", "Fontaine", "Girard"]
LAST += ["N'Diaye", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Le Goff"]
LAST += ["Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel"]
PLACES = [("75011", "Paris"), ("69003", "Lyon"), ("13008", "Marseille"), ("33000", "Bordeaux")]
PLACES += [("42000", "Saint-Étienne"), ("31000", "Toulouse"), ("44000", "Nantes")]
PLACES += [("59000", "Lille"), ("67000", "Strasbourg"), ("35000", "Rennes"), ("21000", "Dijon")]
STREETS = ["rue", "avenue", "boulevard", "place", "chemin", "allée", "impasse", "quai"]
SYLLABLES = ["ber", "nar", "dou", "mar", "tin", "gal", "le", "ro", "vi", "lan", "chet", "mon"]
SYLLABLES += ["pa", "ri", "sa", "co", "fau", "gré", "lo", "du"]
SLUGS = [name.lower().translate(str.maketrans("éèëïçô", "eeeico")) for name in FIRST]
DEPARTMENTS = [f"{number:02d}" for number in range(1, 96) if number != 20]  # no Corsica
COLUMNS = ["nir", "civility", "last_name", "first_name", "birth_date", "email", "street"]
COLUMNS += ["address_complement", "postcode", "city", "country"]


def nir(serial: int) -> str:
    """A distinct valid NIR for each serial up to 94 million."""
    rest, order = divmod(serial, 999)
    department, commune = divmod(rest, 999)
    body = f"{1 + serial % 2}{60 + serial % 40:02d}{1 + serial % 12:02d}"
    body += f"{DEPARTMENTS[department]}{commune + 1:03d}{order + 1:03d}"
    return f"{body}{97 - int(body) % 97:02d}"


def _word(serial: int, syllables: int) -> str:
    """One of len(SYLLABLES) ** syllables made-up words: names and streets that repeat
    only as much as in a real file."""
    word = ""
    for _ in range(syllables):
        serial, at = divmod(serial, len(SYLLABLES))
        word += SYLLABLES[at]
    return word.capitalize()


def write_members(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(COLUMNS)
        for i in range(count):
            postcode, city = PLACES[i % len(PLACES)]
            first = FIRST[i % len(FIRST)]
            writer.writerow(
                [
                    nir(i),
                    "M" if i % 2 == 0 else "MME",
                    LAST[(i // 7) % len(LAST)] if i % 5 < 3 else _word(i * 7919, 3),
                    first,
                    f"19{60 + i % 40}-{1 + i % 12:02d}-15",
                    "" if i % 3 == 2 else f"{SLUGS[i % len(FIRST)]}.{i}@exemple.fr",
                    f"{1 + i % 250} {STREETS[i % len(STREETS)]} {_word(i * 104729, 3)}",
                    "Bâtiment B" if i % 5 == 0 else "",
                    postcode,
                    city,
                    "FR",
                ]
            )


@dataclass
class Figures:
    """One measured run: wall and CPU seconds (the process tree's), peak RSS in MiB, and the
    PostgreSQL server's CPU seconds (None on SQLite or when it cannot be read)."""

    rows: int
    wall: float
    cpu: float
    rss_mib: float | None = None
    server_cpu: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        per_row = 1000 / self.rows if self.rows else 0.0
        return {
            "rows": self.rows,
            "seconds": round(self.wall, 2),
            "rows_per_s": round(self.rows / self.wall) if self.wall else None,
            "cpu_ms_per_row": round(self.cpu * per_row, 4),
            "server_cpu_ms_per_row": None
            if self.server_cpu is None
            else round(self.server_cpu * per_row, 4),
            "peak_rss_mib": None if self.rss_mib is None else round(self.rss_mib, 1),
        }


class Engine:
    """A database to run the commands against, made fresh and thrown away."""

    def __init__(self, name: str, directory: Path, server: str | None) -> None:
        self.name, self.directory, self.server = name, directory, server
        self.postmaster = _postmaster(server) if server else None

    def url(self, db: str) -> str:
        if self.server is None:
            return f"sqlite:///{self.directory / db}.db"
        return make_url(self.server).set(database=db).render_as_string(hide_password=False)

    def create(self, db: str, *, template: str | None = None) -> str:
        if self.server is None:
            if template is not None:
                source = self.directory / f"{template}.db"
                with sqlite3.connect(source) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                shutil.copyfile(source, self.directory / f"{db}.db")
            return self.url(db)
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            like = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{db}"{like}')
        return self.url(db)

    def drop(self, db: str) -> None:
        if self.server is None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.directory / db}.db{suffix}").unlink(missing_ok=True)
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    @contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        assert self.server is not None
        with psycopg.connect(_libpq(self.server), autocommit=True) as conn:
            yield conn

    def server_cpu(self) -> float | None:
        """CPU seconds of the server's ended backends so far (None: not on this machine)."""
        if self.postmaster is None:
            return None
        fields = stat_fields(self.postmaster)
        return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def _libpq(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def _postmaster(server: str) -> int | None:
    """The server's main process, read from its backend's /proc entry while the backend
    lives (read after the connection closed, it was sometimes gone: no server figures)."""
    with psycopg.connect(_libpq(server)) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            return int(stat_fields(backend[0] if backend else 0)[1])
        except OSError:
            return None  # a server on another machine: its CPU is not ours to read


def _settled_cpu(engine: Engine, before: float | None) -> float | None:
    """The server CPU used since `before`, once the run's backends have ended."""
    if before is None:
        return None
    time.sleep(0.5)  # the postmaster reaps an ended backend within moments
    after = engine.server_cpu()
    return None if after is None else after - before


def cli(engine: Engine, url: str, *args: str, rows: int, env: dict[str, str]) -> Figures:
    """Run `cpms-admin --db URL ARGS` (it must succeed) and measure its process tree."""
    before = engine.server_cpu()
    start = time.perf_counter()
    child = subprocess.Popen(
        [CLI, "--db", url, *args],
        env=env,
        cwd=engine.directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    memory = HighWater()  # the command's processes: the only ones below this one
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"cpms-admin {' '.join(args)} failed: {errors.decode()[-2000:]}")
    return Figures(
        rows,
        wall,
        usage.ru_utime + usage.ru_stime,
        max(memory.stop().values(), default=0) / 1024,  # as ru_maxrss: a fork's pages count once
        _settled_cpu(engine, before),
    )


class Stopwatch:
    """Wall and CPU time of this process, summed over the timed parts only."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


MEMBER_COLUMNS = (
    "id, nir, civility, last_name, first_name, birth_date, email, street, address_complement, "
    "address_building, locality, postcode, city, country, envelope_name, search_text, "
    "sort_name, status, created_at, updated_at, imported_at"
)
EXPORTED = (
    "nir, civility, last_name, first_name, birth_date, email, street, address_complement, "
    "postcode, city, country, address_building, locality, envelope_name, status, "
    "closed_reason, closed_at"
)


def _source_rows(engine: Engine, url: str) -> Iterator[list[tuple[Any, ...]]]:
    """The imported member rows, a batch at a time, as the driver gives them."""
    query = f"SELECT {MEMBER_COLUMNS} FROM member ORDER BY id"
    if engine.server is None:
        with sqlite3.connect(make_url(url).database or "") as conn:
            cursor = conn.execute(query)
            while rows := cursor.fetchmany(BATCH):
                yield rows
        return
    with psycopg.connect(_libpq(url)) as conn, conn.cursor(name="source") as cursor:
        cursor.execute(query)
        while rows := cursor.fetchmany(BATCH):
            yield rows


def baseline_import(
    engine: Engine, source: str, rows: int, env: dict[str, str], *, multi_row: bool = False
) -> Figures:
    """The bare load of the imported member rows into a fresh database's member table:
    PostgreSQL COPY; SQLite executemany, or (`multi_row`) INSERT statements of as many rows
    as SQLite takes (its FTS5 search index flushes at every statement: see db_insert.py)."""
    url = engine.create("baseline_import")
    subprocess.run([CLI, "--db", url, "db", "upgrade"], env=env, check=True, capture_output=True)
    clock, before = Stopwatch(), None
    width = len(MEMBER_COLUMNS.split(","))
    one = "(" + ", ".join(["?"] * width) + ")"
    if engine.server is None:
        with sqlite3.connect(make_url(url).database or "", isolation_level=None) as conn:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            per = 32766 // width if multi_row else 1
            for batch in _source_rows(engine, source):
                with clock.timed():
                    conn.execute("BEGIN IMMEDIATE")
                    if not multi_row:
                        conn.executemany(
                            f"INSERT INTO member ({MEMBER_COLUMNS}) VALUES {one}", batch
                        )
                    for at in range(0, len(batch), per) if multi_row else ():
                        chunk = batch[at : at + per]
                        values = ", ".join([one] * len(chunk))
                        flat = [value for row in chunk for value in row]
                        conn.execute(f"INSERT INTO member ({MEMBER_COLUMNS}) VALUES {values}", flat)
                    conn.execute("COMMIT")
    else:
        before = engine.server_cpu()
        with psycopg.connect(_libpq(url)) as conn:
            for batch in _source_rows(engine, source):
                with clock.timed(), conn.cursor() as cursor:
                    with cursor.copy(f"COPY member ({MEMBER_COLUMNS}) FROM STDIN") as copy:
                        for row in batch:
                            copy.write_row(row)
                    conn.commit()
    figures = Figures(rows, clock.wall, clock.cpu, server_cpu=_settled_cpu(engine, before))
    engine.drop("baseline_import")
    return figures


def baseline_export(engine: Engine, url: str, out: Path) -> Figures:
    """A bare SELECT of the exported columns in NIR order, streamed to a csv.writer."""
    query = f"SELECT {EXPORTED} FROM member WHERE pseudonymised_at IS NULL ORDER BY nir"
    before = engine.server_cpu()
    clock, count = Stopwatch(), 0
    with clock.timed(), out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EXPORTED.split(", "))
        if engine.server is None:
            with sqlite3.connect(make_url(url).database or "") as conn:
                for row in conn.execute(query):
                    writer.writerow(row)
                    count += 1
        else:
            with psycopg.connect(_libpq(url)) as conn, conn.cursor(name="export") as cursor:
                cursor.itersize = BATCH
                cursor.execute(query)
                for row in cursor:
                    writer.writerow(row)
                    count += 1
    return Figures(count, clock.wall, clock.cpu, server_cpu=_settled_cpu(engine, before))


LETTERS = (
    "INSERT INTO letter (member_id, kind, purpose, status, created_at, wording) "
    "SELECT id, 'security_code', 'first_login', 'pending', {now}, 'first_access' FROM member"
)


def baseline_campaign(engine: Engine, url: str, rows: int) -> Figures:
    """One INSERT ... SELECT of a letter for every member, one commit."""
    before, clock = engine.server_cpu(), Stopwatch()
    if engine.server is None:
        database = make_url(url).database or ""
        with sqlite3.connect(database, isolation_level=None) as conn, clock.timed():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(LETTERS.format(now="'2026-11-23 22:00:00.000000'"))
            conn.execute("COMMIT")
    else:
        with psycopg.connect(_libpq(url)) as conn, clock.timed():
            conn.execute(LETTERS.format(now="now()"))
            conn.commit()
    return Figures(rows, clock.wall, clock.cpu, server_cpu=_settled_cpu(engine, before))


def run_engine(engine: Engine, csv_path: Path, rows: int, env: dict[str, str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    url = engine.create("bulk_import")
    subprocess.run([CLI, "--db", url, "db", "upgrade"], env=env, check=True, capture_output=True)
    results["import"] = cli(engine, url, "members", "import", str(csv_path), rows=rows, env=env)
    results["import_baseline"] = baseline_import(engine, url, rows, env)
    if engine.server is None:
        results["import_multi_row"] = baseline_import(engine, url, rows, env, multi_row=True)
    out = engine.directory / "export.csv"
    results["export"] = cli(engine, url, "members", "export", "--out", str(out), rows=rows, env=env)
    results["export_baseline"] = baseline_export(engine, url, engine.directory / "bare.csv")
    campaign = ["code", "campaign", "--no-pin", "--channel", "post", "--reason", "bench"]
    copy = engine.create("bulk_campaign", template="bulk_import")
    results["campaign"] = cli(engine, copy, *campaign, rows=rows, env=env)
    engine.drop("bulk_campaign")
    copy = engine.create("bulk_letters", template="bulk_import")
    results["campaign_baseline"] = baseline_campaign(engine, copy, rows)
    for db in ("bulk_letters", "bulk_import"):
        engine.drop(db)
    return {name: figures.as_dict() for name, figures in results.items()}


def report(name: str, results: dict[str, Any]) -> None:
    def line(label: str, run: dict[str, Any], base: dict[str, Any], unit: str) -> None:
        server = ""
        if run["server_cpu_ms_per_row"] is not None:
            server = (
                f", server {run['server_cpu_ms_per_row']:.4f} "
                f"(bare {base['server_cpu_ms_per_row']:.4f})"
            )
        # A small run's baseline can take under 5 ms (rounded to 0 s): no rate, no ratio.
        ratio = f"{run['seconds'] / base['seconds']:5.2f}x" if base["seconds"] else "    -"

        def rate(figures: dict[str, Any]) -> str:
            return f"{figures['rows_per_s']:,}" if figures["rows_per_s"] else "-"

        print(
            f"  {label:9} {run['seconds']:8.2f} s {rate(run):>9} {unit}/s   bare "
            f"{base['seconds']:7.2f} s {rate(base):>9}/s   ratio "
            f"{ratio}   CPU ms/row {run['cpu_ms_per_row']:.4f} "
            f"(bare {base['cpu_ms_per_row']:.4f}){server}   peak RSS {run['peak_rss_mib']} MiB"
        )

    print(f"{name}:")
    line("import", results["import"], results["import_baseline"], "rows")
    if "import_multi_row" in results:
        line("  (multi)", results["import"], results["import_multi_row"], "rows")
    line("export", results["export"], results["export_baseline"], "rows")
    line("campaign", results["campaign"], results["campaign_baseline"], "members")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("CPMS_TEST_DATABASE_URL"),
        help="a server URL whose role may create databases (default: CPMS_TEST_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"members": args.members}
    with tempfile.TemporaryDirectory(prefix="cpms-scale-bulk-") as tmp:
        directory = Path(tmp)
        pepper = directory / "pepper"
        pepper.write_bytes(os.urandom(32).hex().encode())
        pepper.chmod(0o600)
        env = {**os.environ, "CPMS_PEPPER_FILE": str(pepper)}
        env.pop("CPMS_DATABASE_URL", None)
        csv_path = directory / "members.csv"
        write_members(csv_path, args.members)
        print(f"{args.members:,} members ({csv_path.stat().st_size / 2**20:.0f} MiB of CSV)")
        for name in args.engines.split(","):
            if name == "postgresql" and not args.postgresql:
                print("postgresql: skipped (give --postgresql or CPMS_TEST_DATABASE_URL)")
                continue
            server = args.postgresql if name == "postgresql" else None
            folder = directory / name
            folder.mkdir(mode=0o700)
            results[name] = run_engine(Engine(name, folder, server), csv_path, args.members, env)
            report(name, results[name])
    return results


if __name__ == "__main__":
    main()
