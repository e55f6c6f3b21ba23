"""Every benchmark of bench/ still runs, at a size that takes seconds: the README quotes their
figures, and a bench broken by a rename or a new rule (a campaign's events sealed with the
pepper) would otherwise be found only when someone next measures."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"
# Each runnable bench, the arguments that make it small, and a word its report prints.
SMALL = {
    "audit_chain.py": (["--events", "100"], "verify"),
    "campaign.py": (["--members", "100", "--repeat", "1"], "ratio campaign / baseline"),
    "import.py": (["--members", "100", "--repeat", "1"], "ratio import / baseline"),
    "letters.py": (
        ["--letters", "2", "--chunk", "1", "--workers", "1", "--naive", "1", "--smoke"],
        "fpdf2 / batch",
    ),
    "places.py": (["--runs", "1"], "load the base"),
    "search.py": (["--members", "200", "--runs", "1"], "baseline"),
    "startup.py": (["--runs", "1", "--warm-up", "0"], "(floor)"),
    "scale.py": (
        ["--members", "200", "--runs", "1", "--warm-up", "0", "--claim-runs", "1"],
        "campaign",
    ),
    "xlsx.py": (["--members", "100", "--repeat", "1", "--reader-runs", "1"], "XLSX / CSV"),
}
PARTS = {"scale_bulk.py"}  # run by scale.py, which fails when it does


def test_every_runnable_bench_is_checked() -> None:
    """A bench is runnable when it parses arguments; the others are the scale bench's parts."""
    runnable = {path.name for path in BENCH.glob("*.py") if "argparse" in path.read_text()}
    assert runnable - PARTS == set(SMALL), "a new bench: give it a small size here"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_bench_runs_and_reports(name: str, tmp_path: Path) -> None:
    arguments, word = SMALL[name]
    result = subprocess.run(
        [sys.executable, str(BENCH / name), *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert word in result.stdout, result.stdout
