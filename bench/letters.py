"""The nightly batch's letters per second and CPU per letter, side by side in one run with the
naive loop and a hand-placed fpdf2 layout of the same letter, and its peak memory.

    .venv/bin/python bench/letters.py [--letters N] [--chunk C] [--workers W] [--naive M]
                                      [--smoke]

Each measurement runs in a fresh Python process, so one cannot warm up or inflate another:

- naive: each whole letter laid out by `HTML(string=...).write_pdf()` (CSS linked), M letters;
- fpdf2: the same letter laid out by hand (bench/letters_fpdf.py), C letters per file, in
  one process (one core), N letters;
- render: `render_chunks` (each kind's page laid out once, each letter's slots restamped over
  it), C letters per file, W worker processes, N and 4N letters;
- batch: `cpms-admin letters batch --workers W` on a SQLite file of N (then 4N) members with
  a letter each: the whole nightly job through the CLI (start-up, claim, codes, hashes,
  render, commit, publish).

CPU is that of the whole process tree (workers and forkserver included: the bench makes itself
their subreaper, so every process's time is collected when it ends). Peak memory is the sum of
the kernel's RSS high-water marks (VmHWM) of the processes, read from /proc (Linux). The
calibration figure is the seconds a pure-Python loop of 10 million additions takes here.
"""

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

from procs import HighWater, calibration, descendants, high_water_kib

from cpms_admin.letters.pdf.content import LetterContent, sample_content
from cpms_admin.letters.pdf.render import STYLESHEET, LetterRenderer
from cpms_admin.letters.pool import render_chunks

KINDS = ("welcome", "security_code", "pin_reset")


def sample_letters(count: int) -> Iterator[LetterContent]:
    day = date(2026, 11, 23)
    for letter_id in range(1, count + 1):
        letter = sample_content(KINDS[letter_id % 3], letter_id=letter_id, today=day)
        yield replace(letter, specimen=False)


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure_naive(count: int, out_dir: Path) -> dict[str, float]:
    from weasyprint import HTML  # only here: the batch process must not pay for it

    renderer = LetterRenderer()  # only to produce the same HTML as the batch
    letters = list(sample_letters(count))
    started, cpu_started = time.perf_counter(), own_cpu()
    for letter in letters:
        html = renderer.document_html([letter], stylesheet=STYLESHEET)
        HTML(string=html, base_url=str(renderer.letters_dir)).write_pdf(
            out_dir / f"naive-{letter.letter_id}.pdf"
        )
    seconds, cpu = time.perf_counter() - started, own_cpu() - cpu_started
    return {"seconds": seconds, "cpu": cpu, "peak_kib": high_water_kib(os.getpid())}


def measure_batch(count: int, chunk: int, workers: int, out_dir: Path) -> dict[str, float]:
    def chunks() -> Iterator[tuple[Path, list[LetterContent]]]:
        letters = sample_letters(count)
        for number in range(0, count, chunk):
            part = [next(letters) for _ in range(min(chunk, count - number))]
            yield out_dir / f"batch-{number // chunk:05d}.pdf", part

    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    started, cpu_started = time.perf_counter(), own_cpu()
    for _path, _spans in render_chunks(chunks(), workers=workers):
        # The workers live until the last file has been taken, so this sees all of their work.
        for pid, used in descendants(os.getpid()).items():
            peaks[pid] = max(peaks.get(pid, 0), high_water_kib(pid))
            cpu[pid] = used
    seconds = time.perf_counter() - started
    own = high_water_kib(os.getpid())
    return {
        "seconds": seconds,
        "cpu": own_cpu() - cpu_started + sum(cpu.values()),
        "peak_kib": own + sum(peaks.values()),
        "parent_kib": own,
        "worker_kib": max(peaks.values(), default=0),
    }


def measure_fpdf(count: int, chunk: int, out_dir: Path) -> dict[str, float]:
    from letters_fpdf import write_letters

    letters = list(sample_letters(count))
    started, cpu_started = time.perf_counter(), own_cpu()
    for number in range(0, count, chunk):
        write_letters(letters[number : number + chunk], out_dir / f"fpdf-{number}.pdf")
    seconds, cpu = time.perf_counter() - started, own_cpu() - cpu_started
    return {"seconds": seconds, "cpu": cpu, "peak_kib": high_water_kib(os.getpid())}


def populate_letters(path: Path, count: int) -> str:
    """A SQLite file of `count` members, each with a welcome letter pending (not timed)."""
    # Here, not at the top: the workers' forkserver imports this script, and must not pay.
    from campaign import NOW, populate
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from cpms_admin.db import make_engine

    populate(path, count)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    letter = SQLModel.metadata.tables["letter"]
    rows = [
        {"member_id": i + 1, "kind": "welcome", "purpose": "first_login", "status": "pending"}
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(letter), [{**row, "created_at": NOW} for row in rows])
    engine.dispose()
    cli("--db", url, "db", "upgrade")  # and the database's pepper, beside it
    return url


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cpms_admin", *args], check=True, capture_output=True)


def measure_cli_batch(count: int, chunk: int, workers: int, out_dir: Path) -> dict[str, float]:
    url = populate_letters(out_dir / "bench.db", count)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the forkserver's time comes back here
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    memory = HighWater()
    started = time.perf_counter()
    command = ["--db", url, "letters", "batch", "--out", str(out_dir / "out")]
    cli(*command, "--chunk-size", str(chunk), "--workers", str(workers))
    seconds = time.perf_counter() - started
    peaks = memory.stop()
    while True:  # reap what the batch left to its subreaper
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_kib": sum(peaks.values()),
        "worker_kib": max(peaks.values(), default=0),
        "parent_kib": 0,
    }


def run_child(*args: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child(args: list[str]) -> None:
    kind, count = args[0], int(args[1])
    with tempfile.TemporaryDirectory(prefix="bench-letters-") as tmp:
        if kind == "naive":
            result = measure_naive(count, Path(tmp))
        elif kind == "fpdf2":
            result = measure_fpdf(count, int(args[2]), Path(tmp))
        elif kind == "render":
            result = measure_batch(count, int(args[2]), int(args[3]), Path(tmp))
        else:
            result = measure_cli_batch(count, int(args[2]), int(args[3]), Path(tmp))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=300, help="batch size N (also runs 4N)")
    parser.add_argument("--chunk", type=int, default=25, help="letters per PDF file")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--naive", type=int, default=40, help="letters for the naive loop")
    parser.add_argument(
        "--smoke", action="store_true", help="each path once, at N only: checks the bench runs"
    )
    options = parser.parse_args()
    size, chunk, workers = options.letters, str(options.chunk), str(options.workers)
    sizes = (("N", size),) if options.smoke else (("N", size), ("4N", 4 * size))

    loop = calibration()
    rows = [
        ("naive loop", options.naive, run_child("naive", str(options.naive))),
        ("fpdf2 (1 core)", size, run_child("fpdf2", str(size), chunk)),
    ]
    for kind in ("render", "batch"):
        for name, count in sizes:
            rows.append((f"{kind} {name}", count, run_child(kind, str(count), chunk, workers)))
    print(
        f"letters bench: chunk {chunk} letters/file, {workers} workers, {os.cpu_count()} CPUs; "
        f"calibration: 10 million additions in {loop:.2f} s"
    )
    print(
        f"{'path':<16}{'letters':>8}{'seconds':>9}{'letters/s':>11}{'CPU ms/letter':>15}"
        f"{'peak RSS MiB':>14}"
    )
    for label, count, result in rows:
        print(
            f"{label:<16}{count:>8}{result['seconds']:>9.2f}{count / result['seconds']:>11.1f}"
            f"{1000 * result['cpu'] / count:>15.1f}{result['peak_kib'] / 1024:>14.0f}"
        )
    by_label = {label: (count, result) for label, count, result in rows}

    def per_letter(label: str) -> float:
        count, result = by_label[label]
        return result["cpu"] / count

    def rate(label: str) -> float:
        count, result = by_label[label]
        return count / result["seconds"]

    fpdf_cpu, fpdf_rate = per_letter("fpdf2 (1 core)"), rate("fpdf2 (1 core)")
    names = [name for name, _ in sizes]
    largest = f"batch {names[-1]}"
    print(
        "CPU per letter, fpdf2 / batch: "
        + ", ".join(f"{name} {fpdf_cpu / per_letter(f'batch {name}'):.2f}x" for name in names)
        + ";  letters/s, batch / fpdf2: "
        + ", ".join(f"{name} {rate(f'batch {name}') / fpdf_rate:.2f}x" for name in names)
        + f";  {largest} / naive: {rate(largest) / rate('naive loop'):.1f}x"
    )
    if "batch 4N" in by_label:
        small, large = by_label["batch N"][1], by_label["batch 4N"][1]
        print(f"peak memory of the batch, 4N / N: {large['peak_kib'] / small['peak_kib']:.2f}x")
    print("(letters/s needs idle CPUs: other load on the machine lowers it, not CPU ms/letter)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
