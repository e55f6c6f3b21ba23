"""Helpers for the tests that run `cpms-admin` as real processes: the installed command, the
command forked warm (warm_cli.py), the helper processes a run starts, and ways to meet a run
at a known point of its work.

A test never sleeps to let a run get somewhere: it waits for something it can see (a row, a
file) with a deadline, or holds the run at a point it cannot pass until the test lets it go.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlmodel import Session

from tests.harness import Cli
from tests.warm_cli import CPMS, cli_popen, cli_run


def run_installed(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    module: bool = False,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """The installed command (or `python -m cpms_admin`) in `cwd`, with a pepper and none of
    the caller's database, mail or configuration settings; `umask` as cron may give it."""
    command = [sys.executable, "-m", "cpms_admin"] if module else [str(CPMS)]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=_own_settings(env), capture_output=True, text=True,
        timeout=180, check=False, umask=umask,
    )  # fmt: skip


def run_warm(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_installed`, forked warm: for tests where the command's start-up is not the point."""
    return cli_run(
        list(args), cwd=cwd, env=_own_settings(env), capture_output=True, text=True, timeout=180
    )


def run_with_settings_of(
    cli: Cli, *args: str, cwd: Path | None = None, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """`cpms-admin ARGS` forked warm, a process of its own on the in-process `cli`'s database
    and settings (its environment: the suite's, `cli`'s settings, then `env`)."""
    return cli_run(
        list(args), input=stdin, cwd=cwd, env={**os.environ, **cli.env(), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _own_settings(env: dict[str, str] | None) -> dict[str, str]:
    """The caller's environment with a pepper and none of its database, mail or configuration
    settings, then `env`."""
    full_env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper", **(env or {})}
    for key in ("CPMS_DATABASE_URL", "CPMS_SMTP_URL", "CPMS_MAIL_DIR", "CPMS_CONFIG"):
        full_env.pop(key, None)
    return full_env


def start_held(
    args: list[str], *, env: dict[str, str], point: str, flag: Path, stdin: IO[str] | None = None
) -> subprocess.Popen[str]:
    """`cpms-admin ARGS` run with `env` (forked warm), held at the hold point `point`
    (faults.py): returned once it stands there, which it does until `flag` is removed (remove
    it, then `communicate`)."""
    held = cli_popen(
        args,
        env={**env, "CPMS_HOLDPOINT": f"{point}={flag}"},
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: held.poll() is not None or flag.exists(), what=f"the hold at {point}")
    assert held.poll() is None, held.communicate()
    return held


def wait_until(condition: Callable[[], object], *, what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; fail naming `what` if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting, after {timeout:g} s, for {what}"
        time.sleep(0.02)


def waiting_for_a_lock(session: Session) -> bool:
    """PostgreSQL: whether some transaction waits for a row or table lock another holds."""
    session.rollback()
    return bool(session.exec(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).one()[0])


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren...), read from /proc."""
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
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_all_exit(pids: Iterable[int], *, what: str, timeout: float = 15.0) -> None:
    """Helper processes of a killed run notice it is gone and exit by themselves."""
    left = set(pids)
    wait_until(lambda: not any(alive(pid) for pid in left), what=what, timeout=timeout)
