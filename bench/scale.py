"""Issue 18 at national scale: a million members and five million audit events, on SQLite and
PostgreSQL side by side, every figure beside its baseline from the same run.

    .venv/bin/python bench/scale.py [--members N] [--database-url URL] [--runs R]
                                    [--warm-up W] [--claim-runs R] [--letters L] [--batch B]
                                    [--only reads,claim,workers,bulk] [--rebuild] [--plans]

- the databases (scale_build.py, rows from scale_data.py): N members (default 1,000,000) with
  accounts, letters and codes, N/10 letters pending, 5N audit events sealed into the chain;
  built once per size and schema revision (minutes for a million) and kept for the next runs
  under the temporary folder and on the PostgreSQL server (`--rebuild` drops them). A second
  database of the probe member alone is the start-up floor.
- reads (scale_reads.py, item 2): `member show`, `account status`, `member list --search`,
  `member list --locked`, `audit list --nir` as installed commands, large database against
  the floor, interleaved; and their service calls in-process. Whether the search's plan goes
  through its index (FTS5 table, pg_trgm GIN index) at this size; `--plans` prints every
  statement's plan (scale_plans.py).
- claim (scale_claim.py, item 3): the nightly batch's claim of the N/10 pending letters
  against a bare UPDATE of the same rows.
- workers (scale_workers.py, item 4, PostgreSQL only): 1 and then 4 `letters batch` workers
  sharing one queue of L letters (default 2,000), each letter printed exactly once.
- bulk: bench/scale_bulk.py (import, export and campaign at scale).

The calibration figure is the CPU seconds of a pure-Python loop of 10 million additions here,
as bench/letters.py prints it: compare machines by it. PostgreSQL: `--database-url` (or
CPMS_BENCH_DATABASE_URL) names a server whose user may create databases; without it only
SQLite is measured.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import scale_build
from procs import calibration

HERE = Path(__file__).resolve().parent
PARTS = ("reads", "claim", "workers", "bulk")


def section(title: str, lines: list[str]) -> None:
    print(f"\n== {title}")
    for line in lines:
        print(line)
    sys.stdout.flush()


def run_bulk(members: int, server: str | None) -> None:
    """bench/scale_bulk.py's figures (import, export and campaign), in a process of its own."""
    command = [sys.executable, str(HERE / "scale_bulk.py"), "--members", str(members)]
    command += ["--postgresql", server] if server else ["--engines", "sqlite"]
    print("\n== bulk: " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)  # a bulk bench that fails fails this one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CPMS_BENCH_DATABASE_URL"),
        help="a PostgreSQL server (default: $CPMS_BENCH_DATABASE_URL); none: SQLite only",
    )
    parser.add_argument("--runs", type=int, default=15, help="interleaved CLI rounds")
    parser.add_argument(
        "--warm-up", type=int, default=1, help="unmeasured CLI rounds first (default 1)"
    )
    parser.add_argument("--claim-runs", type=int, default=3)
    parser.add_argument("--letters", type=int, default=2000, help="the workers' queue")
    parser.add_argument("--batch", type=int, default=200, help="--limit of each worker's run")
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--rebuild", action="store_true", help="drop the kept databases first")
    parser.add_argument("--plans", action="store_true", help="print each read's query plans")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    server = args.database_url

    from scale_claim import report as claim_report
    from scale_plans import index_check, plans
    from scale_reads import report as reads_report
    from scale_workers import report as workers_report

    loop = calibration()
    print(
        f"bench/scale.py: {args.members:,} members, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; calibration: 10 million additions in {loop:.2f} s"
    )
    if args.rebuild:
        scale_build.drop_cached(server)
    engines = ["sqlite"] + (["postgresql"] if server else [])
    if not server:
        print("no --database-url: PostgreSQL is not measured")
    for engine in engines if parts & {"reads", "claim"} else []:
        large = scale_build.database(engine, args.members, server)
        floor = scale_build.database(engine, 1, server)
        if "reads" in parts:
            lines = reads_report(large, floor, args.runs, args.warm_up)
            section(f"reads, {engine} (item 2)", [*lines, index_check(large)])
        if args.plans:
            section(f"plans, {engine}", plans(large))
        if "claim" in parts:
            section(f"claim, {engine} (item 3)", claim_report(large, args.claim_runs))
    if "workers" in parts and server:
        section("workers (item 4)", workers_report(server, args.letters, args.batch))
    if "bulk" in parts:
        run_bulk(args.members, server)
    print(f"\ncalibration again: 10 million additions in {calibration():.2f} s")


if __name__ == "__main__":
    main()
