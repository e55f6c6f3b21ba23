"""A real `cpms-admin members import` killed half-way (SIGKILL), then run again: every member
ends up there exactly once, and the counts of the two runs add up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from cpms_admin.bulk.importer import BATCH_SIZE
from cpms_admin.db import make_engine
from cpms_admin.models import Account, AuditEvent, Member
from cpms_admin.settings import Settings
from tests.harness import Cli
from tests.import_helpers import person, write_csv

MEMBERS = 20_000


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        members = session.exec(select(func.count()).select_from(Member)).one()
        accounts = session.exec(select(func.count()).select_from(Account)).one()
    return members, accounts


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find the helper process")
def test_a_killed_import_run_again_imports_every_member_once(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "big.csv", [person(n) for n in range(1, MEMBERS + 1)], sep=";")
    env = {**os.environ, **cli.env()}
    engine = make_engine(settings.database_url).execution_options(sqlite_begin="DEFERRED")
    process = subprocess.Popen(
        [sys.executable, "-m", "cpms_admin", "members", "import", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while counts(engine)[0] == 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.005)
        helpers = children(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    members, accounts = counts(engine)
    assert 0 < members < MEMBERS, "killed too late to test anything"
    assert members == accounts  # a batch is all or nothing
    assert members % BATCH_SIZE == 0
    # The checker process notices its reader is gone and exits.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "the checker process outlived the import"
        time.sleep(0.05)

    with Session(engine) as session:
        killed = session.exec(select(AuditEvent).where(AuditEvent.action == "members.import")).one()
    assert killed.outcome == "incomplete"  # the run's one event says what it wrote
    assert json.loads(killed.details)["created"] == members

    again = cli("--json", "members", "import", str(path))
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert (result["created"], result["skipped"], result["invalid"]) == (
        MEMBERS - members,
        members,
        0,
    )
    assert counts(engine) == (MEMBERS, MEMBERS)
    with Session(engine) as session:
        nirs = session.exec(select(Member.nir)).all()
    assert sorted(nirs) == sorted(person(n)["nir"] for n in range(1, MEMBERS + 1))
    engine.dispose()
