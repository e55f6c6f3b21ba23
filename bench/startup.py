"""CLI start-up: the read commands against the import floor, interleaved in the same run.

Agents type these commands all day, so start-up is a feature. The floor is
`python -c "import typer, sqlmodel"`, the two libraries no command can do without; a bare
interpreter is shown beside it. The aim (issue 18): every read command within 1.15x of the
floor.

Runs are interleaved: each round runs every command once (starting one further along each
round), so a noisy neighbour slows all of them alike. Reported per command: the median wall
ms, the median CPU ms (user + system of the child process, from `os.wait4`) and the ratio
of each to the floor's. On a shared machine the CPU figures and the ratios are the ones to
read. Output goes to a pipe, as in a script (no rich tables). Bytecode caching is on for
every row, as on an installed system (a `PYTHONDONTWRITEBYTECODE` in the caller's
environment would otherwise recompile the package at every start).

    .venv/bin/python bench/startup.py [--runs 21] [--warm-up 1]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NIR = "185057800608491"
FLOOR = "python -c 'import typer, sqlmodel' (floor)"
# What `cpms_admin.cli.main` does around the imports: the collector paused, then frozen.
FLOOR_PAUSED = "the floor, collector paused, then frozen"


def run_once(command: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `command`, which must succeed."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {errors.decode()}")
    return wall, usage.ru_utime + usage.ru_stime


def prepare(cli: str, env: dict[str, str], cwd: str) -> None:
    """A database of one member, with its enrolment letter and audit events."""
    add = [cli, "member", "add", "--nir", NIR, "--last-name", "Dupont", "--first-name", "Jean"]
    address = ["--street", "1 rue de la Paix", "--postcode", "75002", "--city", "Paris"]
    for command in ([cli, "db", "upgrade"], [*add, *address]):
        subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="rounds (default 21)")
    parser.add_argument(
        "--warm-up", type=int, default=1, help="unmeasured rounds first (default 1)"
    )
    args = parser.parse_args()
    runs = args.runs
    cli = str(BIN / "cpms-admin")
    rows = {
        "python -c pass (bare interpreter)": [sys.executable, "-c", "pass"],
        FLOOR: [sys.executable, "-c", "import typer, sqlmodel"],
        "the floor, then gc.freeze()": [
            sys.executable,
            "-c",
            "import typer, sqlmodel, gc; gc.freeze()",
        ],
        FLOOR_PAUSED: [
            sys.executable,
            "-c",
            "import gc; gc.disable(); import typer, sqlmodel; gc.freeze(); gc.enable()",
        ],
        "cpms-admin --help": [cli, "--help"],
        "cpms-admin member show NIR": [cli, "member", "show", NIR],
        "cpms-admin --json member show NIR": [cli, "--json", "member", "show", NIR],
        "cpms-admin member list": [cli, "member", "list"],
        "cpms-admin account status NIR": [cli, "account", "status", NIR],
        "cpms-admin audit list": [cli, "audit", "list"],
        "cpms-admin letters list": [cli, "letters", "list"],
    }
    walls: dict[str, list[float]] = {label: [] for label in rows}
    cpus: dict[str, list[float]] = {label: [] for label in rows}
    with tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "CPMS_PEPPER": "bench", "CPMS_DATABASE_URL": "sqlite:///bench.db"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        prepare(cli, env, cwd)
        labels = list(rows)
        for _ in range(args.warm_up):  # bytecode written, files in the page cache
            for label in labels:
                run_once(rows[label], env, cwd)
        for round_ in range(runs):
            shift = round_ % len(labels)
            for label in labels[shift:] + labels[:shift]:
                wall, cpu = run_once(rows[label], env, cwd)
                walls[label].append(wall * 1000)
                cpus[label].append(cpu * 1000)
    wall_floor = statistics.median(walls[FLOOR])
    cpu_floor = statistics.median(cpus[FLOOR])
    print(f"median of {runs} interleaved runs; ratios to the floor's median")
    print(f"{'command':<46} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}")
    for label in labels:
        wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
        print(
            f"{label:<46} {wall:8.0f} {wall / wall_floor:5.2f}x {cpu:8.0f} {cpu / cpu_floor:5.2f}x"
        )


if __name__ == "__main__":
    main()
