"""What the fixtures of conftest.py are made of, for tests that need the types or the pepper:
the test pepper, a clock moved by hand, `cpms-admin` run in-process, and migrating a test
database to a given revision."""

import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import typer.main
from sqlalchemy import Connection, Engine, text
from sqlmodel import Session
from typer.testing import CliRunner, Result

from cpms_admin.audit_chain import keyed
from cpms_admin.audit_chain.form import GENESIS
from cpms_admin.cli.app import app
from cpms_admin.db import make_engine
from cpms_admin.pepper import Peppers
from cpms_admin.settings import Settings

TEST_PEPPER = "test-pepper-not-for-production"
TEST_PEPPERS = Peppers({1: TEST_PEPPER.encode()}, "CPMS_PEPPER")  # as the CLI reads it

# The app's click commands, built once a session as the installed command builds them once a
# process: Typer's `CliRunner.invoke` builds them again on every call (about 6 CPU ms, and the
# suite makes thousands of calls).
COMMAND = typer.main.get_command(app)


def invoke(
    args: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str | None] | None = None,
    **context: Any,
) -> Result:
    """`CliRunner().invoke(app, args, input=..., env=..., **context)` over COMMAND: the same
    isolation of the streams and the environment, and the same Result (exit code, stdout,
    stderr, what a crash raised). `context`: click's context settings (`obj`,
    `terminal_width`)."""
    runner = CliRunner()
    exit_code, exception, exc_info = 0, None, None
    with runner.isolation(input=input, env=env) as (stdout, stderr, output):
        try:
            COMMAND.main(list(args), prog_name=runner.get_default_prog_name(COMMAND), **context)
        except SystemExit as stop:
            exc_info = sys.exc_info()
            if not isinstance(stop.code, int | None):  # sys.exit("message"), as click prints it
                print(stop.code)
            exit_code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            exception = stop if exit_code else None
        except Exception as crash:
            exit_code, exception, exc_info = 1, crash, sys.exc_info()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        streams = stdout.getvalue(), stderr.getvalue(), output.getvalue()
    return Result(runner, *streams, None, exit_code, exception, exc_info)  # type: ignore[arg-type]


def new_chain(connection: Connection | Session) -> None:
    """The audit chain's head as a new database has it (migration 0011), after a test emptied
    every table."""
    connection.execute(
        text(
            "INSERT INTO audit_chain (id, seq, hash, anchor_seq, anchor_hash) "
            "VALUES (1, 0, :genesis, 0, :genesis)"
        ),
        {"genesis": GENESIS},
    )


def own_engine(url: str) -> Engine:
    """An engine of the test's own, as the CLI makes it: its sessions seal the audit events
    they write with the test pepper."""
    return keyed(make_engine(url), TEST_PEPPERS)


class FakeClock:
    """A clock tests move by hand: `clock.advance(seconds=61)`."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Cli:
    """Runs `cpms-admin` in-process against the test database."""

    def __init__(self, settings: Settings, clock: FakeClock | None = None) -> None:
        self.settings = settings
        self.clock = clock

    def env(self) -> dict[str, str]:
        """Every setting as its environment variable (empty means unset)."""
        env = {
            f"CPMS_{f.name.upper()}": ""
            if getattr(self.settings, f.name) is None
            else str(getattr(self.settings, f.name))
            for f in fields(Settings)
        }
        return {**env, "CPMS_AGENT": "agent.test", "CPMS_CONFIG": ""}

    def __call__(self, *args: str, input: str | None = None) -> Any:
        obj = {"clock": self.clock} if self.clock else None
        return invoke(args, input=input, env=self.env(), obj=obj)

    def with_settings(self, **changes: Any) -> "Cli":
        return Cli(replace(self.settings, **changes), self.clock)
