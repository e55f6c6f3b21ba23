"""Item 2 of issue 18: what the five agent commands add to start-up at national scale.

Each command runs as the installed `cpms-admin`, a fresh process, on the large database and on
the floor database (the probe member alone: same command, same answer to print, no large
tables), in interleaved rounds (each round runs every command on both, starting one further
along), with `cpms-admin --version` beside them. Reported per command: the median wall ms on
the large database and on the floor, and their difference, which is what the size of the
tables adds (the aim: at most 100 ms); CPU ms of the client process beside it (on PostgreSQL
the server's work shows in wall time only). Then each command's service call in-process,
median of warm runs in fresh sessions: the query time without start-up.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scale_build import CLI, Built
from sqlmodel import Session
from startup import run_once

from cpms_admin import audit
from cpms_admin.clock import system_clock
from cpms_admin.credentials.account_status import account_status
from cpms_admin.db import session_scope
from cpms_admin.members import records, views
from cpms_admin.settings import load_settings

SEARCH = "dupont lyon"
AIM_MS = 100


def commands(nir: str) -> dict[str, list[str]]:
    return {
        "member show NIR": ["member", "show", nir],
        "account status NIR": ["account", "status", nir],
        f'member list --search "{SEARCH}"': ["member", "list", "--search", SEARCH],
        "member list --locked": ["member", "list", "--locked"],
        "audit list --nir NIR": ["audit", "list", "--nir", nir],
        "member list --status active (not in the issue)": ["member", "list", "--status", "active"],
    }


@dataclass
class Timed:
    wall: list[float]
    cpu: list[float]

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def cli_rounds(large: Built, floor: Built, runs: int, warm_up: int) -> dict[tuple[str, str], Timed]:
    """(command label, "large" | "floor" | "version") -> its times, ms."""
    assert large.probe_nir == floor.probe_nir, "the floor must answer about the same member"
    rows: list[tuple[tuple[str, str], list[str], dict[str, str]]] = [
        (("cpms-admin --version", "version"), [CLI, "--version"], floor.env())
    ]
    for label, args in commands(large.probe_nir).items():
        rows.append(((label, "large"), [CLI, *args], large.env()))
        rows.append(((label, "floor"), [CLI, *args], floor.env()))
    times = {key: Timed([], []) for key, _, _ in rows}
    for _ in range(warm_up):  # bytecode, page cache, the server's buffers
        for _, command, env in rows:
            run_once(command, env, "/")
    for round_ in range(runs):
        shift = round_ % len(rows)
        for key, command, env in rows[shift:] + rows[:shift]:
            wall, cpu = run_once(command, env, "/")
            times[key].wall.append(wall * 1000)
            times[key].cpu.append(cpu * 1000)
    return times


def service_calls(large: Built) -> dict[str, Callable[[Session], Any]]:
    """What each command asks of the services, as the command calls it."""
    settings = load_settings({"CPMS_DATABASE_URL": large.url, "CPMS_PEPPER": "unused"})
    nir, clock = large.probe_nir, system_clock
    labels = list(commands(nir))

    def show(session: Session) -> Any:
        return views.member_view(session, records.get_member(session, nir), clock=clock)

    def listing(**filters: Any) -> Callable[[Session], Any]:
        def call(session: Session) -> Any:  # as `member list` does: the page, then its views
            found = views.list_members(session, limit=50, clock=clock, **filters)
            return views.member_views(session, found, clock=clock)

        return call

    return {
        labels[0]: show,
        labels[1]: lambda s: account_status(s, nir=nir, settings=settings, clock=clock).as_json(),
        labels[2]: listing(search=SEARCH),
        labels[3]: listing(locked=True),
        labels[4]: lambda s: [row.as_json() for row in audit.list_events(s, nir=nir, limit=50)],
        labels[5]: listing(status="active"),
    }


def in_process(large: Built, runs: int) -> dict[str, Timed]:
    engine = large.open()
    found: dict[str, Timed] = {}
    try:
        for label, call in service_calls(large).items():
            timed = found[label] = Timed([], [])
            for run in range(runs + 1):
                with session_scope(engine, read_only=True) as session:
                    wall, cpu = time.perf_counter(), time.process_time()
                    call(session)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if run:  # the first warms the caches
                    timed.wall.append(wall * 1000)
                    timed.cpu.append(cpu * 1000)
    finally:
        engine.dispose()
    return found


def report(large: Built, floor: Built, runs: int, warm_up: int) -> list[str]:
    """The table of item 2 for one engine, as lines; each command's verdict."""
    times = cli_rounds(large, floor, runs, warm_up)
    query = in_process(large, max(runs, 5))
    version = times[("cpms-admin --version", "version")]
    lines = [
        f"{large.engine}: {large.members:,} members, {large.events:,} audit events; "
        f"median of {runs} interleaved runs; `cpms-admin --version` {version.median_wall:.0f} ms "
        f"wall, {version.median_cpu:.0f} ms CPU",
        f"{'command':<48}{'large ms':>9}{'floor ms':>9}{'added':>7}{'  CPU large/floor':>18}"
        f"{'in-process ms':>15}  aim <= {AIM_MS} ms added",
    ]
    for label in commands(large.probe_nir):
        big, small = times[(label, "large")], times[(label, "floor")]
        added = big.median_wall - small.median_wall
        verdict = "ok" if added <= AIM_MS else "MISSED"
        lines.append(
            f"{label:<48}{big.median_wall:>9.0f}{small.median_wall:>9.0f}{added:>7.0f}"
            f"{big.median_cpu:>10.0f} /{small.median_cpu:>5.0f}{query[label].median_wall:>15.1f}"
            f"  {verdict}"
        )
    return lines
