"""Agents writing audit events at once extend one chain: no fork, no gap, no repeated place.
Threads with an engine each, and real processes of `cpms-admin` (unlock and
update loops beside an import of several batches)."""

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.bulk.importer import BATCH_SIZE
from cpms_admin.db import release, transaction
from cpms_admin.settings import Settings
from tests.audit_helpers import assert_chain_intact
from tests.factories import make_member
from tests.harness import Cli, own_engine
from tests.import_helpers import person, write_csv
from tests.process_helpers import cli_run

THREADS, EVENTS_EACH = 6, 15


def places(engine: Engine) -> list[int | None]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT seq FROM audit_event ORDER BY id"))]


def assert_one_chain(engine: Engine, cli: Cli, total: int) -> None:
    found = places(engine)
    assert len(found) == total
    assert sorted(seq for seq in found if seq is not None) == list(range(1, total + 1))
    assert assert_chain_intact(cli)["checked"] == total


def test_threads_writing_at_once_extend_one_chain(
    cli: Cli, settings: Settings, engine: Engine
) -> None:
    barrier, errors = threading.Barrier(THREADS), []

    def agent(number: int) -> None:
        mine = own_engine(settings.database_url)
        try:
            with Session(mine) as session:
                barrier.wait()
                for event in range(EVENTS_EACH):
                    with transaction(session):
                        audit.record(
                            session, agent=f"agent.{number}", action="account.unlock", n=event
                        )
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
        finally:
            release(mine)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert_one_chain(engine, cli, THREADS * EVENTS_EACH)


@pytest.mark.slow
def test_commands_run_at_once_extend_one_chain(
    cli: Cli, session: Session, engine: Engine, tmp_path: Path
) -> None:
    members = [make_member(session, welcome=False) for _ in range(4)]
    before = len(places(engine))
    env = {**os.environ, **cli.env()}
    rounds = 3
    loops = [
        [["account", "unlock", m.nir, "--reason", f"call {i}"] for i in range(rounds)]
        for m in members[:2]
    ] + [
        [["member", "update", m.nir, "--street", f"{i + 1} rue Sala", "--reason", "moved"]
         for i in range(rounds)]
        for m in members[2:]
    ]  # fmt: skip
    size = 2 * BATCH_SIZE + 10  # three batches, each committed with its members' events
    big = write_csv(tmp_path / "big.csv", [person(n) for n in range(500_001, 500_001 + size)])
    failures: list[str] = []

    def run(commands: list[list[str]]) -> None:
        for args in commands:
            done = cli_run(args, env=env, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                failures.append(f"{args}: {done.returncode} {done.stderr}")

    threads = [threading.Thread(target=run, args=(loop,)) for loop in loops]
    threads.append(threading.Thread(target=run, args=([["members", "import", str(big)]],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures
    # Each unlock and update is one event; the import its own, its closing one and one per
    # member it created.
    assert_one_chain(engine, cli, before + 4 * rounds + size + 2)
