"""Rows per second of `members import` on SQLite against a bare Core executemany baseline.

    .venv/bin/python bench/import.py [--members N] [--batch B] [--repeat R]

Both run R times (best time kept, as timeit does: other load on the machine only ever
slows a run down), each on a fresh, upgraded SQLite file, with the same N generated members (a
`;`-separated UTF-8 CSV with a third of the e-mails missing, as office exports come):

- baseline: the rows already parsed and validated (outside the clock), as the member table
  receives them (`records.member_values`: the search columns included, so both pay for the
  search index), inserted with `conn.execute(insert(member), rows)` per batch of B, one
  commit per batch;
- import: `import_members` on the CSV file, everything included: reading and decoding,
  the `member add` validation of every row, the look-up of existing NIRs, members and
  their accounts, the audit events (the run's, and one for each member, each sealed into
  the audit chain), a commit per batch;
- import, audit unchained: the same import with the audit events written as before the
  chain (migration 0009): each event inserted as it is recorded, the members' events of a
  batch by one INSERT ... SELECT, nothing sealed. The two imports alternate, so the chain's
  cost is read from one run.

It prints the rates and the ratio to the baseline (the target: 5,000 rows/s or more, within
3x), and the CPU time per row (the import's: this process and its checker process together,
then this process alone), which other load on the machine changes less than the rates, with
the chained import against the unchained one (the aim: within 20%).
"""

import argparse
import csv
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlmodel import Session, SQLModel

from cpms_admin import audit
from cpms_admin.audit_chain import keyed
from cpms_admin.bulk.formats import read_member_rows
from cpms_admin.bulk.importer import import_members
from cpms_admin.clock import system_clock
from cpms_admin.db import insert_per_member, make_engine, upgrade_schema
from cpms_admin.members.fields import COLUMNS, validate_member_fields
from cpms_admin.members.records import member_values
from cpms_admin.pepper import Peppers

FIRST = [
    ("Jean", "jean"),
    ("Hélène", "helene"),
    ("François", "francois"),
    ("Chloé", "chloe"),
    ("Loïc", "loic"),
    ("Anaïs", "anais"),
    ("Zoé", "zoe"),
    ("Inès", "ines"),
]
LAST = ["Martin", "Bernard", "Dubois", "Lefèvre", "Müller", "Da Silva", "Fontaine", "Girard"]
PLACES = [("75011", "Paris"), ("69003", "Lyon"), ("13008", "Marseille"), ("42000", "Saint-Étienne")]


def nir(serial: int) -> str:
    commune, order = divmod(serial, 999)  # each from 001: a NIR never has 000 in either
    body = f"{1 + serial % 2}{60 + serial % 40:02d}{1 + serial % 12:02d}75"
    body += f"{commune + 1:03d}{order + 1:03d}"
    return f"{body}{97 - int(body) % 97:02d}"


def members(count: int) -> list[dict[str, str]]:
    rows = []
    for i in range(count):
        postcode, city = PLACES[i % len(PLACES)]
        (first, slug), last = FIRST[i % len(FIRST)], LAST[i % len(LAST)]
        rows.append(
            {
                "nir": nir(i),
                "civility": "M" if i % 2 == 0 else "MME",
                "last_name": last,
                "first_name": first,
                "birth_date": f"19{60 + i % 40}-{1 + i % 12:02d}-15",
                "email": "" if i % 3 == 2 else f"{slug}.{i}@exemple.fr",
                "street": f"{1 + i % 120} rue de la République",
                "address_complement": "Bâtiment B" if i % 5 == 0 else "",
                "postcode": postcode,
                "city": city,
                "country": "FR",
            }
        )
    return rows


class Clocks:
    """Wall time, CPU time of this process, and CPU time with its ended children added. The
    process's own from `process_time` (os.times counts in clock ticks: a small smoke run's
    baseline would read 0)."""

    def __init__(self) -> None:
        self.started, self.cpu, self.times = time.perf_counter(), time.process_time(), os.times()

    def read(self) -> tuple[float, float, float]:
        now, cpu, times = time.perf_counter(), time.process_time(), os.times()
        own = cpu - self.cpu
        children = (
            times.children_user
            + times.children_system
            - self.times.children_user
            - self.times.children_system
        )
        return now - self.started, own + children, own


def best(runs: list[tuple[float, float, float]]) -> tuple[float, ...]:
    """The best of each figure on its own, as timeit keeps the best time."""
    return tuple(min(figures) for figures in zip(*runs, strict=True))


def fresh_engine(directory: Path, name: str) -> Engine:
    engine = make_engine(f"sqlite:///{directory / name}", must_exist=False)
    upgrade_schema(engine)
    return keyed(engine, Peppers({1: b"bench-pepper"}, "bench"))


EVENTS = SQLModel.metadata.tables["audit_event"]


@contextmanager
def unchained() -> Iterator[None]:
    """The audit events written as before the chain, for the comparison only: each inserted
    when recorded, the members' events of a batch by one INSERT ... SELECT, nothing sealed."""

    def next_ids(session: Session, count: int) -> list[int]:
        top = session.execute(select(func.max(EVENTS.c.id))).scalar() or 0
        return list(range(top + 1, top + 1 + count))

    def insert_now(session: Session, rows: Iterable[Mapping[str, Any]]) -> None:
        session.execute(insert(EVENTS), list(rows))

    def members_at_once(
        self: audit.RunAudit,
        session: Session,
        member_ids: Sequence[int],
        *,
        change: str,
        at: datetime | None = None,
    ) -> None:
        if not member_ids:
            return
        values = {
            "at": at or self._at,
            "agent": self._agent,
            "action": f"{self._action}.member",
            "reason": self._reason,
            "outcome": "ok",
            "details": audit._as_json({"change": change, "run": self.start(session)}),
        }
        insert_per_member(session, EVENTS, member_ids, values)

    saved = audit.allocate_ids, audit.append, audit.RunAudit.record_members
    audit.allocate_ids, audit.append = next_ids, insert_now  # type: ignore[assignment]
    audit.RunAudit.record_members = members_at_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        audit.allocate_ids, audit.append, audit.RunAudit.record_members = saved  # type: ignore[method-assign]


def baseline(engine: Engine, rows: list[dict[str, str]], batch: int) -> tuple[float, float, float]:
    now = system_clock()
    prepared = []
    for raw in rows:  # validation is not timed here: the baseline is the bare insert
        values = member_values(validate_member_fields(raw))  # the search columns included
        prepared.append(
            {
                **values,
                "status": "active",
                "created_at": now,
                "updated_at": now,
                "imported_at": now,
            }
        )
    table = SQLModel.metadata.tables["member"]
    clocks = Clocks()
    with engine.connect() as conn:
        for at in range(0, len(prepared), batch):
            conn.execute(insert(table), prepared[at : at + batch])
            conn.commit()
    return clocks.read()


def run_import(engine: Engine, path: Path, batch: int) -> tuple[float, float, float]:
    clocks = Clocks()
    with Session(engine, expire_on_commit=False) as session:
        counts = import_members(
            session, member_file=read_member_rows(path), agent="bench", batch_size=batch
        )
    elapsed = clocks.read()
    assert counts.invalid == 0, counts
    with Session(engine) as session:
        stored = session.execute(
            select(func.count()).select_from(SQLModel.metadata.tables["account"])
        ).scalar_one()
    assert stored == counts.created, (stored, counts)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = members(args.members)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / "members.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter=";")
            writer.writeheader()
            writer.writerows(rows)
        bases, fulls, plains = [], [], []
        for run in range(args.repeat):
            bases.append(baseline(fresh_engine(directory, f"baseline{run}.db"), rows, args.batch))
            fulls.append(run_import(fresh_engine(directory, f"import{run}.db"), path, args.batch))
            with unchained():
                engine = fresh_engine(directory, f"plain{run}.db")
                plains.append(run_import(engine, path, args.batch))
    (base, base_cpu, _), (full, full_cpu, full_own) = best(bases), best(fulls)
    plain, plain_cpu, plain_own = best(plains)
    n = args.members
    print(
        f"members:                 {n:,} (SQLite, batches of {args.batch:,}, best of {args.repeat})"
    )
    print(f"baseline Core insert:    {base:6.2f} s  {n / base:9,.0f} rows/s")
    print(f"members import:          {full:6.2f} s  {n / full:9,.0f} rows/s  (validation included)")
    print(f"ratio import / baseline: {full / base:6.2f}x  (target: <= 3x, >= 5,000 rows/s)")
    ms = 1000 / n
    print(
        f"CPU ms per row:          baseline {base_cpu * ms:.4f}, import {full_cpu * ms:.4f} "
        f"(this process alone {full_own * ms:.4f}); ratio {full_cpu / base_cpu:.2f}x"
    )
    print(
        f"audit chain:             import {full:.2f} s against {plain:.2f} s unchained "
        f"({full / plain:.2f}x); CPU ms per row {full_cpu * ms:.4f} against "
        f"{plain_cpu * ms:.4f} ({full_cpu / plain_cpu:.2f}x; this process alone "
        f"{full_own * ms:.4f} against {plain_own * ms:.4f}, aim: within 1.20x)"
    )


if __name__ == "__main__":
    main()
