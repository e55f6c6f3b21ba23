"""CLI start-up: `cpms-admin member show` against baselines measured in the same run.

Agents type these commands all day, so start-up is a feature. Baselines: a bare Python
interpreter, and importing only the database stack the command cannot do without.
Bytecode caching is on for every row, as on an installed system (a `PYTHONDONTWRITEBYTECODE`
in the caller's environment would otherwise recompile the package at every start).

    .venv/bin/python bench/startup.py [--runs 15]
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


def timed(command: list[str], env: dict[str, str], cwd: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "CPMS_PEPPER": "bench", "CPMS_DATABASE_URL": "sqlite:///bench.db"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cli = str(BIN / "cpms-admin")
        subprocess.run([cli, "db", "upgrade"], env=env, cwd=cwd, check=True, capture_output=True)
        subprocess.run(
            [
                cli,
                "member",
                "add",
                "--nir",
                NIR,
                "--last-name",
                "Dupont",
                "--first-name",
                "Jean",
                "--street",
                "1 rue de la Paix",
                "--postcode",
                "75002",
                "--city",
                "Paris",
            ],
            env=env,
            cwd=cwd,
            check=True,
            capture_output=True,
        )
        rows = [
            ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
            (
                "python -c 'import sqlmodel' (dependency floor)",
                [sys.executable, "-c", "import sqlmodel"],
            ),
            ("cpms-admin --help", [cli, "--help"]),
            ("cpms-admin member show NIR", [cli, "member", "show", NIR]),
            ("cpms-admin --json member show NIR", [cli, "--json", "member", "show", NIR]),
        ]
        print(f"median of {runs} runs")
        print(f"{'command':<50} {'ms':>8}")
        for label, command in rows:
            print(f"{label:<50} {timed(command, env, cwd, runs):8.0f}")


if __name__ == "__main__":
    main()
