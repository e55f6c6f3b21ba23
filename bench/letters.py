"""Letters per second of the batch renderer against the naive loop, and its peak memory.

    .venv/bin/python bench/letters.py [--letters N] [--chunk C] [--workers W] [--naive M]

Each measurement runs in a fresh Python process, so one cannot warm up or inflate another:
the naive loop (each whole letter laid out by `HTML(string=...).write_pdf()`, CSS linked from
the page), then the batch path (`render_chunks`: each kind's page laid out once and every
letter's slots printed over it, C letters per file, W worker processes) for N and 4N letters.
Peak memory is the sum of the kernel's RSS high-water marks (VmHWM) of the process and of its
workers, read from /proc (Linux).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

from cpms_admin.letters.content import LetterContent, sample_content
from cpms_admin.letters.pool import render_chunks
from cpms_admin.letters.render import STYLESHEET, LetterRenderer

KINDS = ("welcome", "security_code", "pin_reset")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def sample_letters(count: int) -> Iterator[LetterContent]:
    day = date(2026, 11, 23)
    for letter_id in range(1, count + 1):
        letter = sample_content(KINDS[letter_id % 3], letter_id=letter_id, today=day)
        yield replace(letter, specimen=False)


def high_water_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process has just exited
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> dict[int, float]:
    """Every process below `pid` (the forkserver and its workers) -> CPU seconds used so far."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return {child: cpu[child] for child in found}


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


def run_child(*args: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child(args: list[str]) -> None:
    kind, count = args[0], int(args[1])
    with tempfile.TemporaryDirectory(prefix="bench-letters-") as tmp:
        if kind == "naive":
            result = measure_naive(count, Path(tmp))
        else:
            result = measure_batch(count, int(args[2]), int(args[3]), Path(tmp))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=200, help="batch size N (also runs 4N)")
    parser.add_argument("--chunk", type=int, default=25, help="letters per PDF file")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--naive", type=int, default=40, help="letters for the naive loop")
    options = parser.parse_args()
    size, chunk, workers = options.letters, str(options.chunk), str(options.workers)

    naive = run_child("naive", str(options.naive))
    small = run_child("batch", str(size), chunk, workers)
    large = run_child("batch", str(4 * size), chunk, workers)

    rows = (
        ("naive loop", options.naive, naive),
        ("batch N", size, small),
        ("batch 4N", 4 * size, large),
    )
    print(f"letters bench: chunk {chunk} letters/file, {workers} workers, {os.cpu_count()} CPUs")
    print(
        f"{'path':<12}{'letters':>8}{'seconds':>9}{'letters/s':>11}{'CPU ms/letter':>15}"
        f"{'peak RSS MiB':>14}  (parent + largest worker)"
    )
    for label, count, result in rows:
        workers_note = (
            f"  ({result['parent_kib'] / 1024:.0f} + {result['worker_kib'] / 1024:.0f})"
            if "worker_kib" in result
            else ""
        )
        print(
            f"{label:<12}{count:>8}{result['seconds']:>9.2f}{count / result['seconds']:>11.1f}"
            f"{1000 * result['cpu'] / count:>15.1f}{result['peak_kib'] / 1024:>14.0f}"
            f"{workers_note}"
        )
    naive_rate = options.naive / naive["seconds"]
    print(
        f"speed-up over naive: batch N {size / small['seconds'] / naive_rate:.1f}x, "
        f"batch 4N {4 * size / large['seconds'] / naive_rate:.1f}x;   "
        f"peak memory 4N / N: {large['peak_kib'] / small['peak_kib']:.2f}x"
    )
    print("(letters/s needs idle CPUs: other load on the machine lowers it, not CPU ms/letter)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
