"""The audit chain: how fast events are sealed, and how fast and in how much memory
`audit verify` walks them.

    .venv/bin/python bench/audit_chain.py [--events N] [--postgresql URL]

Builds a fresh database (SQLite under a temporary folder; with --postgresql, a database of its
own on that server, dropped at the end) and appends N events and then 4N more through the
chain's own code (`audit_chain.seal.append`, 5,000 events a transaction, as the members'
events of an import's batches), timing the sealing. After each, `verify_chain` runs in a
fresh process: its rate (events/s, wall and CPU) and the peak memory of that process, which
must not grow with the log (it streams).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from cpms_admin.audit_chain import keyed, verify_chain
from cpms_admin.audit_chain.seal import allocate_ids, append
from cpms_admin.db import make_engine, normalise_url, transaction, upgrade_schema
from cpms_admin.pepper import Peppers

PEPPERS = Peppers({1: b"bench-pepper"}, "bench")
BATCH = 5000


def fill(url: str, count: int) -> float:
    """Append `count` events; the CPU seconds it took."""
    engine = keyed(make_engine(url), PEPPERS)
    at = datetime.now(UTC)
    started = time.process_time()
    with Session(engine) as session:
        for done in range(0, count, BATCH):
            size = min(BATCH, count - done)
            with transaction(session):
                ids = allocate_ids(session, size)
                append(
                    session,
                    (
                        {
                            "id": event_id,
                            "at": at,
                            "agent": "bench",
                            "action": "members.import.member",
                            "outcome": "ok",
                            "details": json.dumps({"change": "created", "run": 1}),
                        }
                        for event_id in ids
                    ),
                )
    engine.dispose()
    return time.process_time() - started


def verify_in_a_fresh_process(url: str) -> dict[str, float]:
    found = subprocess.run(
        [sys.executable, __file__, "--verify-only", url],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(found.stdout)
    return figures


def verify_only(url: str) -> None:
    engine = keyed(make_engine(url), PEPPERS)
    wall, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as session:
        report = verify_chain(session)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert report.ok, report.message
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"events": report.checked, "wall": wall, "cpu": cpu, "peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--postgresql", help="a server URL; a database is made there")
    parser.add_argument("--verify-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_only:
        verify_only(args.verify_only)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgresql:
            server = make_url(normalise_url(args.postgresql))
            name = f"cpms_bench_chain_{uuid.uuid4().hex[:8]}"
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = server.set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{Path(tmp) / 'chain.db'}"
        engine = make_engine(url, must_exist=False)
        upgrade_schema(engine)
        engine.dispose()
        try:
            total = 0
            for count in (args.events, 4 * args.events):
                sealed = fill(url, count)
                total += count
                found = verify_in_a_fresh_process(url)
                print(
                    f"{'PostgreSQL' if args.postgresql else 'SQLite'}: {count:,} events "
                    f"appended at {count / sealed:,.0f} events/s of CPU; verify of "
                    f"{total:,}: {found['wall']:.2f} s ({total / found['wall']:,.0f} events/s, "
                    f"{total / found['cpu']:,.0f} events/s of CPU), "
                    f"peak {found['peak_mib']:.0f} MiB"
                )
        finally:
            if args.postgresql:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
