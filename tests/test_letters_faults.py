"""Real `cpms-admin letters batch` processes killed with SIGKILL (at each failpoint, then at
random instants), and run again: every letter ends up in exactly one completed batch, no PDF
ever looks finished without a manifest listing it, printed codes work and codes from discarded
files do not. And two runs at once never take the same letter."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cpms_admin.clock import system_clock
from cpms_admin.models import Letter, LetterBatch, pk
from cpms_admin.settings import Settings
from tests.harness import Cli
from tests.letters_helpers import (
    assert_every_pdf_is_listed,
    check_batch_dir,
    code_works,
    codes_in_file,
    letter_text,
    manifests,
    printed_code,
    queue_members,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find helper processes"),
]
FAILPOINTS = [
    "letters.after_claim",
    "letters.mid_render",
    "letters.before_commit",
    "letters.after_commit",
    "letters.mid_publish",
]


def start(
    cli: Cli, out: Path, *options: str, failpoint: str | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, **cli.env(), "CPMS_FAILPOINT": failpoint or ""}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cpms_admin",
            "--json",
            "letters",
            "batch",
            "--out",
            str(out),
            *options,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(cli: Cli, out: Path, *options: str, failpoint: str | None = None) -> tuple[int, str]:
    process = start(cli, out, *options, failpoint=failpoint)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout + stderr


def descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_helpers_exit(helpers: set[int]) -> None:
    """Rendering workers notice their run is gone and exit (no orphan left writing files)."""
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "rendering helpers outlived the killed run"
        time.sleep(0.05)


def assert_exactly_once(session: Session, settings: Settings, out: Path) -> dict[int, str]:
    """Every letter printed, in exactly one completed batch and one manifest; the files match
    their manifests; one printed code per batch works on the portal. Letter id -> code."""
    session.rollback()  # a fresh snapshot (SQLite keeps the one of an open read)
    letters = session.exec(select(Letter)).all()
    assert Counter(le.status for le in letters) == Counter({"printed": len(letters)})
    assert not [p for p in out.iterdir() if p.name.startswith(".batch-")], "leftover staging"
    listed: Counter[int] = Counter()
    codes = {}
    for directory, manifest in manifests(out):
        check_batch_dir(directory, manifest)
        row = session.get(LetterBatch, manifest["batch_id"])
        assert row is not None and row.status == "completed"
        ids = [entry["letter_id"] for entry in manifest["letters"]]
        assert row.letter_count == len(ids)
        assert {pk(le) for le in letters if le.batch_id == row.id} == set(ids)
        listed.update(ids)
        for entry in manifest["letters"]:
            codes[entry["letter_id"]] = printed_code(letter_text(directory, entry))
    assert listed == Counter({pk(le): 1 for le in letters})
    return codes


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_run_killed_at_a_failpoint_is_finished_by_the_next_run(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path, failpoint: str
) -> None:
    queue_members(session, 7)
    out = tmp_path / "out"
    code, output = run(cli, out, "--chunk-size", "3", failpoint=failpoint)
    assert code == -signal.SIGKILL, output
    assert_every_pdf_is_listed(out)
    discarded: dict[int, str] = {}
    if failpoint in ("letters.mid_render", "letters.before_commit"):
        parts = sorted(out.glob(".batch-*.partial/*.pdf.part"))
        assert parts, "the killed run had rendered something"
        kept = shutil.copy(parts[0], tmp_path / "discarded.pdf")
        discarded = codes_in_file(Path(kept))
        assert discarded
    code, output = run(cli, out)
    assert code == 0, output
    codes = assert_exactly_once(session, settings, out)
    for letter_id, old in discarded.items():
        assert old != codes[letter_id]
        assert not code_works(session, settings, system_clock, letter_id, old)
    first, last = min(codes), max(codes)
    assert code_works(session, settings, system_clock, first, codes[first])
    assert code_works(session, settings, system_clock, last, codes[last])


def test_runs_killed_at_random_instants_still_print_each_letter_once(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    queue_members(session, 40)
    out = tmp_path / "out"
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    for _ in range(3):
        process = start(cli, out, "--chunk-size", "2", "--workers", "2")
        time.sleep(chance.uniform(0.3, 3.0))
        helpers = descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert_helpers_exit(helpers)
        assert_every_pdf_is_listed(out)
    code, output = run(cli, out)
    assert code == 0, f"seed {seed}: {output}"
    codes = assert_exactly_once(session, settings, out)
    some = chance.choice(sorted(codes))
    assert code_works(session, settings, system_clock, some, codes[some]), f"seed {seed}"


def test_two_runs_at_once_never_take_the_same_letter(
    cli: Cli, session: Session, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    """SQLite: the second run is refused (exit 4). PostgreSQL: both print, sharing the queue."""
    queue_members(session, 30)
    out = tmp_path / "out"
    first = start(cli, out, "--chunk-size", "2", "--limit", "20")
    if engine.dialect.name == "sqlite":
        deadline = time.monotonic() + 60
        while not session.exec(select(LetterBatch)).first():  # the first run holds the lock
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
            session.rollback()
        session.rollback()
        code, output = run(cli, out, "--chunk-size", "2", "--limit", "20")
        assert code == 4, output
        assert "Error: another letters batch is running (lock " in output
    else:
        code, output = run(cli, out, "--chunk-size", "2", "--limit", "20")
        assert code == 0, output
    outputs = first.communicate(timeout=120)
    assert first.returncode == 0, outputs
    if engine.dialect.name == "sqlite":
        code, output = run(cli, out)  # the rest, once the lock is free
        assert code == 0, output
    assert len(manifests(out)) == 2
    assert_exactly_once(session, settings, out)  # disjoint, and together they cover all
