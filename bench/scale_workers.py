"""Item 4 of issue 18: `letters batch` workers sharing one PostgreSQL queue, as several
machines would, and every letter printed exactly once.

A queue of L letters (L members, one letter each, none moot) is built once as a template
database; each measurement starts from a copy of it. A worker stands for one machine: it runs
`cpms-admin --json letters batch --out <its own folder> --limit B --workers 1` again and again
(one process at a time, rendering in that process) until a run finds nothing to claim. W
workers run at once; the figures are the wall time until the last worker stops, letters/s, and
the CPU time per letter of every cpms-admin process (user + system, from `os.wait4`; the
PostgreSQL server's own work is not in it), and how many of the machine's cores were busy
meanwhile (/proc/stat: ours, the server's and anyone else's).

Then the check, from what the workers published and from the database: the letter ids of
every batch's manifest.json, over every worker's folder, hold each of the L letters exactly
once (none in two batches, none missing); every letter is printed, in a batch that completed;
one code was stored per letter. Each worker's share of the letters is printed too: the queue
was shared, not taken whole by the first.

With 2 cores, 4 workers cannot print 4 times as fast as one: rendering is CPU work, so the
rate is bound by the cores (at best 2x one worker's, less what the server and the machine's
other load take).
"""

import json
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from scale_build import (
    CLI,
    PEPPER,
    PostgresLoader,
    name,
    pg_exists,
    pg_recreate,
    upgrade,
)
from scale_data import Maker, Plan
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cpms_admin.db import make_engine, normalise_url


@dataclass
class Worker:
    number: int
    out: Path
    runs: int = 0
    printed: int = 0
    cpu: float = 0.0
    errors: list[str] = field(default_factory=list)


def queue_template(server: str, letters: int) -> str:
    """The template database of `letters` members with a letter each (built once)."""
    template = name(letters).replace("cpms_scale_", "cpms_scale_queue_")
    url = make_url(normalise_url(server)).set(database=template)
    rendered = url.render_as_string(hide_password=False)
    if pg_exists(server, template):
        engine = make_engine(rendered)
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM letter")).scalar_one() == letters
        engine.dispose()
        if done:
            return template
    pg_recreate(server, template)
    upgrade(rendered)
    maker = Maker(Plan(letters))
    engine = make_engine(rendered)
    loader = PostgresLoader(engine)
    queued = maker.plan.now - timedelta(hours=2)
    for members, accounts in maker.members():
        loader.load("member", [{**m, "status": "active"} for m in members])
        loader.load("account", accounts)
        loader.load(
            "letter",
            [maker.letter(m["id"], "security_code", "pending", queued, None) for m in members],
        )
    loader.remake([])
    engine.dispose()
    return template


def run_cli(command: list[str], env: dict[str, str]) -> tuple[int, str, str, float]:
    """Exit code, stdout, stderr and CPU seconds (user + system) of one cpms-admin run."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return child.returncode, out.read().decode(), err.read().decode(), cpu


def work(worker: Worker, env: dict[str, str], batch: int) -> None:
    """One machine: `letters batch` until a run finds the queue empty."""
    command = [CLI, "--json", "letters", "batch", "--out", str(worker.out)]
    command += ["--limit", str(batch), "--workers", "1"]
    while True:
        code, out, err, cpu = run_cli(command, env)
        worker.cpu += cpu
        worker.runs += 1
        if code:
            worker.errors.append(err.strip())
            return
        summary = json.loads(out)
        worker.printed += summary["printed"]
        if summary["batch_id"] is None and not summary["cancelled"]:
            return


def measure(
    server: str, template: str, workers: int, batch: int, letters: int
) -> tuple[float, list[str]]:
    """W workers on a fresh copy of the queue: letters/s and the lines to print, the figures
    then the exactly-once check."""
    database = f"{template}_run"
    pg_recreate(server, database, template=template)
    url = make_url(normalise_url(server)).set(database=database)
    env = {**os.environ, "CPMS_DATABASE_URL": url.render_as_string(hide_password=False)}
    env["CPMS_PEPPER"] = PEPPER
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            crew = [Worker(number, Path(tmp) / f"machine-{number}") for number in range(workers)]
            threads = [threading.Thread(target=work, args=(w, env, batch)) for w in crew]
            started, busy, pg_cpu = time.perf_counter(), machine_busy(), postgres_cpu()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            busy, pg_cpu = machine_busy() - busy, postgres_cpu() - pg_cpu
            problems = [f"machine {w.number}: {e}" for w in crew for e in w.errors]
            problems += check_once(env["CPMS_DATABASE_URL"], crew, letters)
    finally:
        _drop(server, database)
    cpu = sum(w.cpu for w in crew)
    shares = ", ".join(f"{w.printed}" for w in crew)
    runs = sum(w.runs for w in crew)
    rate = letters / seconds
    return rate, [
        f"{workers} worker{'s' if workers > 1 else ''}: {letters:,} letters in {seconds:.1f} s, "
        f"{rate:.1f} letters/s, {1000 * cpu / letters:.1f} CPU ms/letter (cpms-admin "
        f"processes); {runs} runs of --limit {batch}; letters per worker: {shares}",
        f"  cores busy meanwhile: {busy / seconds:.2f} of {os.cpu_count()}: cpms-admin "
        f"{cpu / seconds:.2f}, PostgreSQL {pg_cpu / seconds:.2f}, other jobs on the machine "
        f"{(busy - cpu - pg_cpu) / seconds:.2f}",
        "  exactly once: "
        + ("yes (every letter in one manifest, printed, one code each)" if not problems else "NO"),
        *(f"  problem: {problem}" for problem in problems),
    ]


def machine_busy() -> float:
    """CPU seconds every process of the machine has used since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server so far: its live processes, and the backends that
    ended (the postmaster's reaped children). Other users' sessions on it count too."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = (entry / "stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if name.endswith("(postgres"):
            found[int(entry.name)] = fields.split()
    total = 0
    for values in found.values():
        total += int(values[11]) + int(values[12])  # utime, stime
        if int(values[1]) not in found:  # the postmaster: add its children that ended
            total += int(values[13]) + int(values[14])  # cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def check_once(url: str, crew: list[Worker], letters: int) -> list[str]:
    """What is wrong with the letters printed (nothing, when each went out exactly once)."""
    in_manifests: Counter[int] = Counter()
    for worker in crew:
        for manifest in worker.out.glob("batch-*/manifest.json"):
            entries = json.loads(manifest.read_text())["letters"]
            in_manifests.update(entry["letter_id"] for entry in entries)
    problems = [f"letter #{i} in {n} batches" for i, n in in_manifests.items() if n > 1]
    engine = make_engine(url)
    with engine.connect() as conn:
        ids = set(conn.execute(text("SELECT id FROM letter")).scalars())
        printed = conn.execute(
            text(
                "SELECT count(*) FROM letter JOIN letter_batch b ON b.id = letter.batch_id "
                "WHERE letter.status = 'printed' AND b.status = 'completed'"
            )
        ).scalar_one()
        codes = conn.execute(
            text("SELECT count(DISTINCT letter_id), count(*) FROM security_code")
        ).one()
    engine.dispose()
    missing = ids - set(in_manifests)
    if missing:
        problems.append(f"{len(missing)} letters in no manifest (e.g. #{min(missing)})")
    if len(ids) != letters or printed != letters:
        problems.append(f"{printed} of {len(ids)} letters printed in a completed batch")
    if tuple(codes) != (letters, letters):
        problems.append(f"codes stored: {codes[1]} for {codes[0]} letters")
    return problems


def _drop(server: str, database: str) -> None:
    admin = create_engine(make_url(normalise_url(server)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def report(server: str, letters: int, batch: int) -> list[str]:
    template = queue_template(server, letters)
    lines = [
        f"PostgreSQL, one queue of {letters:,} letters, {os.cpu_count()} cores; each worker runs "
        f"`letters batch --limit {batch} --workers 1` until the queue is empty"
    ]
    one, found = measure(server, template, 1, batch, letters)
    lines += found
    four, found = measure(server, template, 4, batch, letters)
    lines += found
    lines.append(
        f"4 workers / 1: {four / one:.2f}x the letters/s (bound by the {os.cpu_count()} cores: "
        "rendering is CPU work)"
    )
    return lines
