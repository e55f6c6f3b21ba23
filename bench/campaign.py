"""Seconds for a `code campaign` over N members on SQLite, against a bare Core baseline.

    .venv/bin/python bench/campaign.py [--members N] [--repeat R]

N members without a PIN (a third without e-mail) are put in a fresh, upgraded SQLite file
with bulk inserts (not timed). Then, best of R (each on a fresh copy of that file):

- baseline: the same number of `letter` rows, already built, inserted with
  `conn.execute(insert(letter), rows)` per batch and one commit per batch;
- campaign: `run_campaign(--no-pin, --channel auto)`: the selection, the "already on its
  way" checks, the channel of each member, the letter and e-mail inserts, the audit events
  (the run's, and one for each member).

The issue's aim: 100,000 members "well under a minute". It also prints the CPU time per
member of this process (the campaign has no helper process), which other load on the machine
changes less than the seconds.
"""

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, insert
from sqlmodel import Session, SQLModel

from cpms_admin.audit_chain import keyed
from cpms_admin.bulk.campaign import BATCH_SIZE, Selection, run_campaign
from cpms_admin.db import make_engine, upgrade_schema
from cpms_admin.pepper import Peppers

NOW = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
MEMBER, ACCOUNT = SQLModel.metadata.tables["member"], SQLModel.metadata.tables["account"]
LETTER = SQLModel.metadata.tables["letter"]


def nir(serial: int) -> str:
    commune, order = divmod(serial, 999)  # each from 001: a NIR never has 000 in either
    body = f"{1 + serial % 2}{60 + serial % 40:02d}{1 + serial % 12:02d}75"
    body += f"{commune + 1:03d}{order + 1:03d}"
    return f"{body}{97 - int(body) % 97:02d}"


def populate(path: Path, count: int) -> None:
    engine = make_engine(f"sqlite:///{path}", must_exist=False)
    upgrade_schema(engine)
    members = [
        {
            "id": i + 1,
            "nir": nir(i),
            "civility": "MME",
            "last_name": "Martin",
            "first_name": "Hélène",
            "email": None if i % 3 == 2 else f"m{i}@exemple.fr",
            "street": "12 rue de la République",
            "postcode": "69002",
            "city": "Lyon",
            "country": "FR",
            "search_text": "",
            "status": "active",
            "created_at": NOW,
            "updated_at": NOW,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(MEMBER), members)
        conn.execute(
            insert(ACCOUNT),
            [
                {"member_id": m["id"], "failed_attempts": 0, "captcha_required": False}
                for m in members
            ],
        )
    engine.dispose()


def copy(template: Path, name: str) -> Engine:
    target = template.with_name(name)
    shutil.copyfile(template, target)
    # A campaign seals its audit events into the chain, keyed by the database's pepper.
    return keyed(make_engine(f"sqlite:///{target}"), Peppers({1: b"bench-pepper"}, "bench"))


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def baseline(engine: Engine, count: int) -> tuple[float, float]:
    rows = [
        {
            "member_id": i + 1,
            "kind": "security_code",
            "status": "pending",
            "created_at": NOW,
            "purpose": "first_login",
        }
        for i in range(count)
    ]

    def insert_all() -> None:
        with engine.connect() as conn:
            for at in range(0, count, BATCH_SIZE):
                conn.execute(insert(LETTER), rows[at : at + BATCH_SIZE])
                conn.commit()

    return timed(insert_all)


def campaign(engine: Engine, count: int) -> tuple[float, float]:
    def run() -> None:
        with Session(engine, expire_on_commit=False) as session:
            counts = run_campaign(
                session,
                selection=Selection(no_pin=True),
                channel="auto",
                reason="bench",
                agent="bench",
                clock=lambda: NOW,
            )
        assert counts.letters + counts.emails == count, counts

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.members
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        populate(template, n)
        bases = [baseline(copy(template, f"baseline{run}.db"), n) for run in range(args.repeat)]
        fulls = [campaign(copy(template, f"campaign{run}.db"), n) for run in range(args.repeat)]
    # The best of each figure on its own, as timeit keeps the best time.
    base, base_cpu = min(wall for wall, _ in bases), min(cpu for _, cpu in bases)
    full, full_cpu = min(wall for wall, _ in fulls), min(cpu for _, cpu in fulls)
    print(f"members:                  {n:,} without a PIN (SQLite, best of {args.repeat})")
    print(f"baseline Core insert:     {base:6.2f} s  {n / base:9,.0f} rows/s")
    print(f"code campaign --no-pin:   {full:6.2f} s  {n / full:9,.0f} members/s")
    print(f"ratio campaign / baseline: {full / base:5.2f}x  (aim: 100,000 well under a minute)")
    print(
        f"CPU ms per member:        baseline {1000 * base_cpu / n:.4f}, "
        f"campaign {1000 * full_cpu / n:.4f}; ratio {full_cpu / base_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()
