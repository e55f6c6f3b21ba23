"""Agents are who the system says they are, and their role decides what they may run.

Identity comes from the OS user on SQLite and from the login role on PostgreSQL: the tests
run `cpms-admin` as a second OS user (a forked child that drops to that user, as `runuser`
would) and connect as other PostgreSQL login roles, which they create and drop.
"""

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlmodel import Session, select

from cpms_admin.agents.grants import group_name, groups_of
from cpms_admin.agents.identity import os_user, os_user_exists
from cpms_admin.agents.registry import acting
from cpms_admin.agents.rights import COMMAND_DUTIES
from cpms_admin.agents.roles import Role
from cpms_admin.audit_chain.seal import keyed
from cpms_admin.cli.app import app
from cpms_admin.db import make_engine, migrate, normalise_url, transaction, upgrade_schema
from cpms_admin.errors import Refused
from cpms_admin.faults import HOLD_VAR
from cpms_admin.members.nir import format_nir
from cpms_admin.models import Agent
from cpms_admin.operations.doctor import check_database, check_mail
from cpms_admin.settings import Settings
from tests.cred_helpers import PIN, give_pin
from tests.databases import PG_URL, created_login, new_pg_database, record_test_pepper
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, TEST_PEPPERS, Cli, FakeClock
from tests.process_helpers import wait_until

SUPPORT_USER = "cpms-t-support"
STRANGER_USER = "cpms-t-stranger"
COLLEAGUE_USER = "cpms-t-colleague"  # a second support agent, of the team
TEAM_GROUP = "cpms-t-team"


def test_every_command_has_a_duty() -> None:
    """A command missing from the rights table is refused to everyone: none may be missing,
    and the table names no command that does not exist."""
    found: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    assert set(found) == set(COMMAND_DUTIES)


def runner_identity(url: str) -> str:
    """Who the tests are, to the database at `url`."""
    if url.startswith("sqlite"):
        return os_user()
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        name = conn.execute(text("SELECT session_user")).scalar_one()
    engine.dispose()
    return str(name)


def test_first_upgrade_makes_its_runner_admin(empty_db_url: str, tmp_path: Path) -> None:
    cli = Cli(Settings(database_url=empty_db_url, pepper=TEST_PEPPER), FakeClock())
    assert cli("db", "upgrade").exit_code == 0
    agents = json.loads(cli("--json", "agent", "list").stdout)
    assert [(a["name"], a["role"]) for a in agents] == [(runner_identity(empty_db_url), "admin")]


def test_agent_option_is_a_label_not_an_identity(
    cli: Cli, session: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--agent portal`, CPMS_AGENT or $USER cannot make anyone the portal or another agent:
    the event names the system's identity, the text is only its label."""
    member = make_member(session)
    monkeypatch.setenv("USER", "portal")
    monkeypatch.setenv("LOGNAME", "portal")
    done = cli("--agent", "portal", "account", "unlock", member.nir, "--reason", "by phone")
    assert done.exit_code == 0, done.stderr
    [event] = json.loads(cli("--json", "audit", "list", "--action", "account.unlock").stdout)
    assert (event["agent"], event["label"]) == (runner_identity(db_url), "portal")


def test_the_global_options_may_be_typed_after_the_command(cli: Cli, session: Any) -> None:
    """Agents type options last: `--agent` after the command labels the event as typed
    first, in either spelling; words after `--` are the command's own."""
    member = make_member(session)
    done = cli("account", "unlock", member.nir, "--reason", "by phone", "--agent", "INC-42")
    assert done.exit_code == 0, done.stderr
    listed = cli("audit", "list", "--action", "account.unlock", "--agent=INC-43", "--json")
    [event] = json.loads(listed.stdout)
    assert event["label"] == "INC-42"
    after_dashes = cli("member", "show", "--", "--agent")
    assert after_dashes.exit_code == 2, after_dashes.stderr
    assert "'--agent'" in after_dashes.stderr  # read as the NIR, and refused as one
    unset = cli("account", "unlock", member.nir, "--reason", "again", "--agent", "--json")
    assert unset.exit_code == 2  # `--agent $TICKET` with TICKET empty: not a label "--json"
    assert "Option '--agent' requires an argument." in json.loads(unset.stdout)["error"]
    assert len(json.loads(cli("--json", "audit", "list", "--action", "account.unlock").stdout)) == 1


def test_the_portal_flows_are_the_portal_s_and_the_label_says_who_ran_them(
    cli: Cli, session: Any, settings: Settings, db_url: str
) -> None:
    member = make_member(session)
    give_pin(session, settings, member)
    done = cli("--agent", "QA-7", "portal", "login", member.nir, input=f"{PIN}\n")
    assert done.exit_code == 0, done.stderr
    [event] = json.loads(cli("--json", "audit", "list", "--action", "portal.login").stdout)
    assert (event["agent"], event["label"]) == ("portal", f"{runner_identity(db_url)}: QA-7")
    # A label of 99 characters was refused "at most 100": the room the runner's name leaves.
    room = 100 - len(f"{runner_identity(db_url)}: ")
    long = cli("--agent", "Q" * (room + 1), "portal", "login", member.nir, input=f"{PIN}\n")
    assert (long.exit_code, long.stderr) == (
        2,
        f"Error: the label (--agent, CPMS_AGENT) has {room + 1} characters; a portal command "
        f"records it after '{runner_identity(db_url)}:', which leaves room for {room}\n",
    )
    assert (
        cli("--agent", "Q" * room, "portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    )


def test_the_last_admin_cannot_be_disabled_or_demoted(cli: Cli, db_url: str) -> None:
    me = runner_identity(db_url)
    disabled = cli("agent", "disable", me, "--reason", "oops")
    assert (disabled.exit_code, disabled.stderr.strip()) == (
        1,
        f"Error: {me} is the last admin: add another admin first",
    )
    demoted = cli("agent", "add", me, "--role", "support")
    assert demoted.exit_code == 1 and "last admin" in demoted.stderr
    agents = json.loads(cli("--json", "agent", "list").stdout)
    assert [(a["name"], a["role"], a["disabled_at"]) for a in agents] == [(me, "admin", None)]


def test_an_engine_s_next_transaction_checks_its_agent_again(cli: Cli, db_url: str) -> None:
    """What a command already running finds once an admin disabled its agent, or took the
    role it needs away: its next transaction is refused, and commits nothing."""
    if db_url.startswith("postgresql"):
        pytest.skip("the runner is the cluster's superuser there; test_agents' PostgreSQL tests")
    me = runner_identity(db_url)
    assert cli("agent", "add", "daemon", "--role", "admin").exit_code == 0  # another admin
    engine = keyed(acting(make_engine(db_url), command="agent add"), TEST_PEPPERS)
    try:
        with Session(engine) as session, transaction(session):
            session.exec(select(Agent)).all()  # allowed while an admin
        assert cli("agent", "add", me, "--role", "support").exit_code == 0  # demoted
        with (
            Session(engine) as session,
            pytest.raises(Refused) as refused,
            transaction(session),
        ):
            session.add(Agent(name="x", role="support", added_at=FakeClock()(), added_by=me))
        assert str(refused.value) == f"not allowed: agent add needs admin ({me} is support)"
        names = [a["name"] for a in json.loads(cli("--json", "agent", "list").stdout)]
        assert "x" not in names
    finally:
        engine.dispose()


def test_an_admin_with_no_account_here_does_not_stand_for_the_last_one(
    cli: Cli, db_url: str
) -> None:
    """SQLite: an agent may be added ahead of their OS account, but until it exists they
    cannot act, so they are not the other admin that lets the last one go."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's agents are login roles, which must exist to be added")
    me = runner_identity(db_url)
    for name in (me.upper(), "no_account_of_this_name"):
        assert cli("agent", "add", name, "--role", "admin").exit_code == 0
    disabled = cli("agent", "disable", me, "--reason", "oops")
    assert (disabled.exit_code, disabled.stderr.strip()) == (
        1,
        f"Error: {me} is the last admin: add another admin first",
    )
    # A user without a passwd entry acts as `uid-N` (a container's): such an admin counts.
    assert os_user_exists("uid-54321") and not os_user_exists("uid-x")
    for other_name in ("uid-0", "uid-00", "uid-١٢"):  # root acts as root; not os_user's form
        assert not os_user_exists(other_name), other_name
    other = next(user.pw_name for user in pwd.getpwall() if user.pw_name != me)  # has an account
    assert cli("agent", "add", other, "--role", "admin").exit_code == 0
    assert cli("agent", "disable", me, "--reason", "handed over").exit_code == 0


def test_a_login_role_must_exist_on_postgresql(cli: Cli, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite agents are OS users: any name may be added ahead of its account")
    added = cli("agent", "add", "nobody_of_this_name", "--role", "support")
    assert (added.exit_code, "no database login role 'nobody_of_this_name'") == (
        5,
        added.stderr.removeprefix("Error: ").split(":")[0],
    )
    assert "nobody_of_this_name" not in cli("agent", "list").stdout


def test_a_group_role_or_one_nobody_logs_in_as_is_no_agent(
    cli: Cli, db_url: str, login_role: str
) -> None:
    """A group made an agent would hand the role to every member of the group: the support
    agents' group made nightly would let each of them delete audit events from psql. A role
    made without LOGIN is named as such, with the fix."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite agents are OS users")
    database = make_url(db_url).database
    for group in ("pg_read_all_data", f"cpms_support@{database}"):
        for role in ("nightly", "admin"):
            refused = cli("agent", "add", group, "--role", role)
            assert (refused.exit_code, refused.stderr.splitlines()[0]) == (
                1,
                f"Error: {group!r} is a group role: its members would all gain the agent's "
                "role; an agent is one person's or one job's login role",
            )
    admin = create_engine(normalise_url(db_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER ROLE {login_role} NOLOGIN"))
        refused = cli("agent", "add", login_role, "--role", "support")
        assert (refused.exit_code, refused.stderr.splitlines()[0]) == (
            1,
            f'Error: {login_role!r} cannot log in: ALTER ROLE "{login_role}" LOGIN if it is '
            "a person's or a job's role made without it",
        )
    finally:
        admin.dispose()
    assert cli("agent", "list").stdout.count("\n") == 2  # the header and the first admin


def test_a_login_role_granted_to_others_is_no_agent(cli: Cli, db_url: str, login_role: str) -> None:
    """Its members would act with the agent's role in psql: a support agent granted a role
    added as admin raised herself to admin (`UPDATE agent`) and deleted audit events. Refused
    at `agent add`; granted since, `db upgrade` takes it out of the groups."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite agents are OS users")
    with created_login(db_url) as team, created_login(db_url) as other:
        admin = create_engine(normalise_url(db_url), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f"GRANT {team} TO {login_role}"))
            refused = cli("agent", "add", team, "--role", "admin")
            assert (refused.exit_code, refused.stderr) == (
                1,
                f"Error: {team!r} is granted to other roles ({login_role}): they would all gain "
                "the agent's role; add each person's own login role as an agent\n",
            )
            assert cli("agent", "add", other, "--role", "admin").exit_code == 0
            with admin.connect() as conn:
                conn.execute(text(f"GRANT {other} TO {login_role}"))
            assert cli("db", "upgrade").exit_code == 0
            with admin.connect() as conn:
                groups = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_auth_members am JOIN pg_roles m "
                        "ON m.oid = am.member WHERE m.rolname = :name"
                    ),
                    {"name": other},
                ).scalar_one()
                conn.execute(text(f"REVOKE {team} FROM {login_role}"))
                conn.execute(text(f"REVOKE {other} FROM {login_role}"))
            assert groups == 0
        finally:
            admin.dispose()


def test_an_agent_whose_login_role_was_dropped_is_disabled_all_the_same(
    cli: Cli, db_url: str
) -> None:
    """Someone leaves: the DBA drops their role, then an admin disables the agent. That failed
    ("role does not exist", exit 5) and left the agent enabled, for whoever is given the name
    next to inherit at the next upgrade."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite agents are OS users")
    with created_login(db_url) as leaver:
        assert cli("agent", "add", leaver, "--role", "supervisor").exit_code == 0
        admin = create_engine(normalise_url(db_url), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f"DROP ROLE {leaver}"))
        finally:
            admin.dispose()
        disabled = cli("agent", "disable", leaver, "--reason", "left")
        assert disabled.exit_code == 0, disabled.output
        listed = json.loads(cli("--json", "agent", "list").stdout)
        assert [a["disabled_reason"] for a in listed if a["name"] == leaver] == ["left"]


def test_the_portal_s_name_is_kept_for_the_portal(cli: Cli, db_url: str) -> None:
    """Codes an agent named "portal" asked for would pass for the member's own requests."""
    for role in ("support", "supervisor", "admin"):
        refused = cli("agent", "add", "portal", "--role", role)
        assert refused.exit_code == 1 and "reserved for the portal" in refused.stderr
    assert "portal" not in [line.split()[0] for line in cli("agent", "list").stdout.splitlines()]
    assert cli("--json", "audit", "list", "--action", "agent.add").stdout.strip() == "[]"
    if db_url.startswith("sqlite"):  # on PostgreSQL the login role would have to exist
        assert cli("agent", "add", "portal", "--role", "portal").exit_code == 0


def test_agent_changes_are_audited(cli: Cli, db_url: str, new_login: str) -> None:
    bob = new_login
    assert cli("--agent", "INC-42", "agent", "add", bob, "--role", "support").exit_code == 0
    assert cli("agent", "add", bob, "--role", "supervisor").exit_code == 0
    disabled = cli("agent", "disable", bob, "--reason", "left")
    assert (disabled.exit_code, disabled.stdout) == (0, f"Disabled {bob} (was supervisor).\n")
    again = cli("--json", "agent", "disable", bob, "--reason", "left")
    assert json.loads(again.stdout) == {
        "name": bob,
        "role": "supervisor",
        "before": "disabled",
        "changed": False,
    }
    events = json.loads(cli("--json", "audit", "list").stdout)
    found = [(e["action"], e["details"].get("role"), e["reason"], e["outcome"]) for e in events]
    assert found[:4] == [
        ("agent.disable", None, "left", "noop"),  # the second: nothing to do, audited all the same
        ("agent.disable", None, "left", "ok"),
        ("agent.add", "supervisor", None, "ok"),
        ("agent.add", "support", None, "ok"),
    ]
    assert events[3]["label"] == "INC-42"
    assert {e["agent"] for e in events[:4]} == {runner_identity(db_url)}


# What `audit list --json` prints for each event (docs/scripting.md#listings): the table's
# column naming an agent adds nothing to it.
EVENT_KEYS = {"id", "at", "agent", "label", "action", "nir", "reason", "outcome", "details"}


def test_audit_list_names_the_agent_an_agent_event_changed(
    cli: Cli, session: Session, db_url: str, new_login: str
) -> None:
    """Who was added with which role, or disabled, reads in the table's last column (the
    columns before keep their place for scripts that cut them); an `agent add` that changed
    nothing names no role before; the JSON is as it was."""
    bob, member = new_login, make_member(session)
    assert cli("account", "unlock", member.nir, "--reason", "by phone").exit_code == 0
    assert cli("--agent", "INC-42", "agent", "add", bob, "--role", "support").exit_code == 0
    assert cli("agent", "add", bob, "--role", "supervisor").exit_code == 0
    assert cli("agent", "disable", bob, "--reason", "left").exit_code == 0
    assert cli("agent", "add", bob, "--role", "support").exit_code == 0  # back
    again = cli("agent", "add", bob, "--role", "support")
    assert (again.exit_code, again.stdout) == (0, f"Nothing to do: {bob} is already support.\n")
    listed = cli("audit", "list", "--limit", "6")
    assert listed.exit_code == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines[0] == [
        "#", "When", "Agent", "Label", "Action", "NIR", "Outcome", "Reason", "Agent changed"
    ]  # fmt: skip
    assert [line[3:] for line in lines[1:]] == [
        ["agent.test", "agent.add", "", "noop", "", f"{bob} (support)"],  # nothing was before
        ["agent.test", "agent.add", "", "ok", "", f"{bob} (support, was disabled)"],
        ["agent.test", "agent.disable", "", "ok", "left", bob],
        ["agent.test", "agent.add", "", "ok", "", f"{bob} (supervisor, was support)"],
        ["INC-42", "agent.add", "", "ok", "", f"{bob} (support)"],
        ["agent.test", "account.unlock", format_nir(member.nir), "noop", "by phone", ""],
    ]
    events = json.loads(cli("--json", "audit", "list", "--limit", "6").stdout)[2:]
    assert all(set(event) == EVENT_KEYS for event in events)
    me = runner_identity(db_url)
    assert [{k: e[k] for k in EVENT_KEYS - {"id", "at"}} for e in events[:3]] == [
        {"agent": me, "label": "agent.test", "action": "agent.disable", "nir": None,
         "reason": "left", "outcome": "ok", "details": {"name": bob}},
        {"agent": me, "label": "agent.test", "action": "agent.add", "nir": None,
         "reason": None, "outcome": "ok",
         "details": {"name": bob, "role": "supervisor", "before": "support"}},
        {"agent": me, "label": "INC-42", "action": "agent.add", "nir": None, "reason": None,
         "outcome": "ok", "details": {"name": bob, "role": "support", "before": None}},
    ]  # fmt: skip
    assert events[3]["nir"] == member.nir


def test_agent_add_records_the_reason_it_is_given(cli: Cli, new_login: str) -> None:
    """`agent add --reason`, optional, says why as `agent disable --reason` does: why a
    disabled agent is enabled again."""
    bob = new_login
    assert cli("agent", "add", bob, "--role", "support").exit_code == 0
    assert cli("agent", "disable", bob, "--reason", "on leave").exit_code == 0
    back = cli("agent", "add", bob, "--role", "support", "--reason", " back from leave ")
    assert (back.exit_code, back.stdout) == (0, f"{bob} is now support (was disabled).\n")
    [event] = json.loads(cli("--json", "audit", "list", "--limit", "1").stdout)
    assert (event["action"], event["reason"], event["details"]) == (
        "agent.add",
        "back from leave",
        {"name": bob, "role": "support", "before": "disabled"},
    )
    [line] = cli("audit", "list", "--limit", "1").stdout.splitlines()[1:]
    assert line.split("\t")[4:] == [
        "agent.add",
        "",
        "ok",
        "back from leave",
        f"{bob} (support, was disabled)",
    ]
    blank = cli("agent", "add", bob, "--role", "admin", "--reason", " ")
    assert (blank.exit_code, blank.stderr) == (2, "Error: the reason must not be empty\n")
    assert [a["role"] for a in json.loads(cli("--json", "agent", "list").stdout)
            if a["name"] == bob] == ["support"]  # fmt: skip


def test_an_agent_command_that_changes_nothing_is_audited_as_a_noop(
    cli: Cli, new_login: str
) -> None:
    """Every agent action is audited, those with nothing to do too (as `member close` and
    `account unlock`): who tried to give bob a role he had, or to disable him twice, and why."""
    bob = new_login

    def last_event() -> tuple[Any, ...]:
        [event] = json.loads(cli("--json", "audit", "list", "--limit", "1").stdout)
        return event["action"], event["outcome"], event["reason"], event["details"]

    assert cli("agent", "add", bob, "--role", "support").exit_code == 0
    again = cli("agent", "add", bob, "--role", "support", "--reason", "ticket 12")
    assert (again.exit_code, again.stdout) == (0, f"Nothing to do: {bob} is already support.\n")
    assert last_event() == (
        "agent.add", "noop", "ticket 12", {"name": bob, "role": "support", "before": "support"},
    )  # fmt: skip
    assert cli("agent", "disable", bob, "--reason", "left").exit_code == 0
    twice = cli("agent", "disable", bob, "--reason", "left, really")
    assert (twice.exit_code, twice.stdout) == (0, f"Nothing to do: {bob} is already disabled.\n")
    assert last_event() == ("agent.disable", "noop", "left, really", {"name": bob})
    [listed] = [a for a in json.loads(cli("--json", "agent", "list").stdout) if a["name"] == bob]
    assert listed["disabled_reason"] == "left"  # the first reason stays


# --- a second OS user, on SQLite -------------------------------------------------------------


def _os_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def os_users() -> None:
    """Two OS users with no other rights: made once, kept (like any system account)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make the second OS user")
    for name in (SUPPORT_USER, STRANGER_USER, COLLEAGUE_USER):
        if not _os_user_exists(name):
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
            )


@pytest.fixture
def shared_cli(os_users: None, sqlite_template: Path) -> Iterator[Cli]:
    """A SQLite database the agents' OS users share, as a team would (a shared folder)."""
    folder = Path(tempfile.mkdtemp(prefix="cpms-shared-"))
    try:
        folder.chmod(0o777)
        path = folder / "cpms.db"
        shutil.copyfile(sqlite_template, path)
        path.chmod(0o666)  # SQLite gives its -wal and -shm files the database's mode
        settings = Settings(
            database_url=f"sqlite:///{path}", pepper=TEST_PEPPER, mail_dir=str(folder / "out")
        )
        yield Cli(settings, FakeClock())
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def team_cli(os_users: None, sqlite_template: Path) -> Iterator[Cli]:
    """A SQLite database shared as README "Agents and rights" says: the colleague who set it
    up owns the data folder and the database, which belong to the agents' group (the folder
    setgid 2770, the database 0660). The folder holds the outbox."""
    if subprocess.run(["getent", "group", TEAM_GROUP], capture_output=True).returncode:
        subprocess.run(["groupadd", "--system", TEAM_GROUP], check=True)
    for user in (SUPPORT_USER, COLLEAGUE_USER):
        subprocess.run(["usermod", "--append", "--groups", TEAM_GROUP, user], check=True)
    uid, gid = pwd.getpwnam(COLLEAGUE_USER).pw_uid, grp.getgrnam(TEAM_GROUP).gr_gid
    parent = Path(tempfile.mkdtemp(prefix="cpms-team-"))
    parent.chmod(0o755)
    folder = parent / "data"
    try:
        folder.mkdir()
        os.chown(folder, uid, gid)
        folder.chmod(0o2770)
        path = folder / "cpms.db"
        shutil.copyfile(sqlite_template, path)
        os.chown(path, uid, gid)
        path.chmod(0o660)
        settings = Settings(
            database_url=f"sqlite:///{path}", pepper=TEST_PEPPER, mail_dir=str(folder / "outbox")
        )
        yield Cli(settings, FakeClock())
    finally:
        shutil.rmtree(parent)


def run_as(
    user: str, cli: Cli, *args: str, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`cpms-admin *args` in a child process running as OS user `user` (what `runuser -u`
    does), with `environ` added to its environment. A crash is reported as its repr on
    stderr."""

    def command() -> list[Any]:
        os.environ.update(environ or {})  # the child's own
        result = cli(*args)
        crash = not isinstance(result.exception, SystemExit | None)
        return [result.exit_code, result.stdout, repr(result.exception) if crash else result.stderr]

    exit_code, stdout, stderr = as_user(user, command)
    return exit_code, stdout, stderr


def as_user(user: str, work: Callable[[], Any]) -> Any:
    """What `work()` returns (JSON-able), run in a child process as OS user `user`. Forked,
    because this interpreter lives where other users may not read: `work` may only use what
    is imported already."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `user` for good, work, report, leave
        os.close(read)
        try:
            entry = pwd.getpwnam(user)
            os.initgroups(user, entry.pw_gid)  # as a login would: their groups, no other
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            report = work()
        except BaseException as exc:
            report = [99, "", repr(exc)]
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return report


def _audit_count(cli: Cli) -> int:
    return len(json.loads(cli("--json", "audit", "list", "--all").stdout))


def test_a_support_agent_is_known_by_their_os_user_and_kept_to_their_role(
    shared_cli: Cli,
) -> None:
    cli = shared_cli
    nir = "185057800608491"
    added = cli(
        "member", "add", "--nir", nir, "--last-name", "Dupont", "--first-name", "Jean",
        "--street", "1 rue de la Paix", "--postcode", "75002", "--city", "Paris", "--no-welcome",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr

    # Not an agent yet: refused, whatever they call themselves.
    code, _, err = run_as(SUPPORT_USER, cli, "--agent", "root", "member", "show", nir)
    assert (code, err.strip()) == (
        1,
        f"Error: not allowed: {SUPPORT_USER!r} is not an agent of this database "
        f"(an admin adds them: cpms-admin agent add {SUPPORT_USER} --role support)",
    )
    assert cli("agent", "add", SUPPORT_USER, "--role", "support").exit_code == 0

    # What support does, done as themselves.
    code, out, err = run_as(SUPPORT_USER, cli, "--agent", "root", "account", "unlock", nir,
                            "--reason", "called in")  # fmt: skip
    assert code == 0, err
    [event] = json.loads(cli("--json", "audit", "list", "--action", "account.unlock").stdout)
    assert (event["agent"], event["label"]) == (SUPPORT_USER, "root")

    # What needs a supervisor or an admin: one line, exit 1, nothing changed.
    before = _audit_count(cli)
    for args, needs in [
        (("members", "export"), "members export needs supervisor"),
        (("members", "import", "/no/such/file.csv"), "members import needs supervisor"),
        (
            ("letters", "returned", "--from-file", "/no/such.csv"),
            "letters returned needs supervisor",
        ),
        (("member", "close", nir, "--reason", "x"), "member close needs supervisor"),
        (("agent", "add", SUPPORT_USER, "--role", "admin"), "agent add needs admin"),
        (("db", "upgrade"), "db upgrade needs admin"),
        (("purge",), "purge needs admin"),
        (("portal", "login", nir), "portal login needs admin"),  # before asking for a PIN
    ]:
        code, out, err = run_as(SUPPORT_USER, cli, *args)
        assert (code, out, err.strip()) == (
            1,
            "",
            f"Error: not allowed: {needs} ({SUPPORT_USER} is support)",
        ), args
    shown = json.loads(cli("--json", "member", "show", nir).stdout)
    assert shown["status"] == "active"
    assert _audit_count(cli) == before
    roles = {a["name"]: a["role"] for a in json.loads(cli("--json", "agent", "list").stdout)}
    assert roles[SUPPORT_USER] == "support"

    # Disabled: refused from then on.
    assert cli("agent", "disable", SUPPORT_USER, "--reason", "left").exit_code == 0
    code, _, err = run_as(SUPPORT_USER, cli, "member", "show", nir)
    assert (code, err.strip()) == (
        1,
        f"Error: not allowed: agent {SUPPORT_USER!r} is disabled (left)",
    )


def run_held(user: str, cli: Cli, point: str, *args: str) -> Callable[[], tuple[int, str, str]]:
    """`run_as(user, cli, *args)`, started and standing at failpoint `point` when this returns
    a function: calling it lets the run go on and returns what `run_as` returns."""
    flag = Path(cli.settings.database_url.removeprefix("sqlite:///")).parent / f"{user}.held"
    pool = ThreadPoolExecutor(1)
    outcome = pool.submit(run_as, user, cli, *args, environ={HOLD_VAR: f"{point}={flag}"})
    pool.shutdown(wait=False)
    wait_until(lambda: outcome.done() or flag.exists(), what=f"{user} at {point}")
    assert not outcome.done(), outcome.result()

    def go_on() -> tuple[int, str, str]:
        flag.unlink()
        return outcome.result(timeout=120)

    return go_on


def test_an_agent_disabled_while_their_command_runs_is_refused_at_its_next_transaction(
    shared_cli: Cli,
) -> None:
    """On SQLite, rights are checked as a command starts and again as each of its transactions
    begins, inside the database's write lock: an admin disabled between the two changes
    nothing, and a batch whose agent is disabled after its claim prints nothing (the next run
    prints the letter, once)."""
    cli = shared_cli
    for user in (SUPPORT_USER, COLLEAGUE_USER):
        assert cli("agent", "add", user, "--role", "admin").exit_code == 0
    go_on = run_held(
        COLLEAGUE_USER, cli, "agents.authorized",
        "agent", "disable", SUPPORT_USER, "--reason", "left",
    )  # fmt: skip
    assert cli("agent", "disable", COLLEAGUE_USER, "--reason", "moved on").exit_code == 0
    code, _, err = go_on()
    assert (code, err.strip()) == (
        1,
        f"Error: not allowed: agent {COLLEAGUE_USER!r} is disabled (moved on)",
    )
    agents = {a["name"]: a for a in json.loads(cli("--json", "agent", "list").stdout)}
    assert agents[SUPPORT_USER]["disabled_at"] is None

    assert cli("agent", "add", SUPPORT_USER, "--role", "nightly").exit_code == 0
    added = cli(
        "member", "add", "--nir", make_nir(), "--last-name", "Roux", "--first-name", "Léa",
        "--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr  # its enrolment letter waits
    with tempfile.TemporaryDirectory() as spool:
        Path(spool).chmod(0o755)
        out = Path(spool) / "print"
        out.mkdir()
        out.chmod(0o1777)  # both agents print there, as into /tmp
        go_on = run_held(
            SUPPORT_USER, cli, "letters.after_claim", "letters", "batch", "--out", str(out)
        )
        assert cli("agent", "disable", SUPPORT_USER, "--reason", "left the team").exit_code == 0
        code, _, err = go_on()
        assert code == 1 and err.strip().endswith(
            f"Error: not allowed: agent {SUPPORT_USER!r} is disabled (left the team)"
        ), err
        assert not _printed_by(cli)
        again = json.loads(cli("--json", "letters", "batch", "--out", str(out)).stdout)
        assert again["printed"] == 1
    assert _printed_by(cli) == [runner_identity(cli.settings.database_url)]


def _printed_by(cli: Cli) -> list[str]:
    """Who ran each batch that printed."""
    events = json.loads(cli("--json", "audit", "list", "--action", "letters.batch").stdout)
    return [event["agent"] for event in events if event["outcome"] == "ok"]


def test_a_group_of_agents_shares_the_outbox_the_first_e_mail_made(team_cli: Cli) -> None:
    """The outbox is made by whoever e-mails first, in a folder a colleague owns. Made
    owner-only, or refused as another user's folder, it failed every other agent's e-mail
    (and the portal's, after telling the member it was sent)."""
    cli = team_cli
    nirs = [make_nir() for _ in range(3)]
    for nir in nirs:
        added = cli(
            "member", "add", "--nir", nir, "--last-name", "Dupont", "--first-name", "Jean",
            "--email", "jean@example.org", "--street", "1 rue de la Paix", "--postcode", "75002",
            "--city", "Paris", "--no-welcome",
        )  # fmt: skip
        assert added.exit_code == 0, added.stderr
    for agent in (SUPPORT_USER, COLLEAGUE_USER):
        assert cli("agent", "add", agent, "--role", "support").exit_code == 0
    # The agents' processes can import nothing new (see `as_user`): e-mail once from here,
    # elsewhere, so that what e-mailing imports is loaded.
    elsewhere = cli.with_settings(mail_dir=str(Path(cli.settings.mail_dir).parent.parent / "x"))
    assert elsewhere("code", "issue", nirs[2], "--channel", "email").exit_code == 0
    for agent, nir in zip((COLLEAGUE_USER, SUPPORT_USER), nirs, strict=False):
        code, _, err = run_as(agent, cli, "code", "issue", nir, "--channel", "email",
                              "--reason", "called")  # fmt: skip
        assert (code, err) == (0, ""), agent
    outbox = Path(cli.settings.mail_dir)
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o2770  # the folder's setgid kept
    assert (outbox.stat().st_uid, outbox.stat().st_gid) == (
        pwd.getpwnam(COLLEAGUE_USER).pw_uid,
        grp.getgrnam(TEAM_GROUP).gr_gid,
    )
    assert len(list(outbox.glob("*.eml"))) == 2

    def doctor_on_mail() -> dict[str, Any]:  # `doctor`'s check, as the command would run it
        return asdict(check_mail(cli.settings))

    assert as_user(SUPPORT_USER, doctor_on_mail)["ok"] is True
    outbox.chmod(0o700)  # as the code before made it: doctor tells, with the fix
    mail = as_user(SUPPORT_USER, doctor_on_mail)
    assert (mail["ok"], mail["detail"]) == (
        False,
        f"no SMTP configured, and e-mails cannot be written to {outbox}/: {outbox} belongs to "
        f"another user (uid {pwd.getpwnam(COLLEAGUE_USER).pw_uid}) and is no folder your "
        "group shares; refusing to write",
    )
    assert "chmod 2770" in mail["fix"]


def test_a_database_the_agents_may_not_write_is_a_doctor_problem(team_cli: Cli) -> None:
    """A backup restored with the wrong mode: every check passed, then the nightly batch
    failed on its first write."""
    cli = team_cli
    database = Path(cli.settings.database_url.removeprefix("sqlite:///"))

    def doctor_on_database() -> dict[str, Any]:  # `doctor`'s check, as the command would run it
        return asdict(check_database(cli.settings))

    assert as_user(SUPPORT_USER, doctor_on_database)["ok"] is True
    database.chmod(0o640)  # the group may read, no longer write
    found = as_user(SUPPORT_USER, doctor_on_database)
    assert (found["ok"], found["detail"]) == (
        False,
        f"{database} is not writable by this user: every command that changes something "
        "(the nightly batch, mail send) would fail",
    )
    assert found["fix"].startswith(f"give this user write access to {database}")
    database.chmod(0o660)
    wal = database.with_name(database.name + "-wal")  # as a run as root left it, killed
    wal.touch()
    os.chown(wal, 0, 0)
    wal.chmod(0o600)
    found = as_user(SUPPORT_USER, doctor_on_database)
    assert isinstance(found, dict), found
    assert (found["ok"], found["detail"].split(" is not")[0]) == (False, str(wal))


def test_someone_who_is_no_agent_changes_nothing(shared_cli: Cli) -> None:
    before = _audit_count(shared_cli)
    code, _, err = run_as(STRANGER_USER, shared_cli, "agent", "add", STRANGER_USER,
                          "--role", "admin")  # fmt: skip
    assert code == 1 and "is not an agent" in err
    names = [a["name"] for a in json.loads(shared_cli("--json", "agent", "list").stdout)]
    assert STRANGER_USER not in names
    assert _audit_count(shared_cli) == before


# --- PostgreSQL login roles, and what the database itself refuses ---------------------------


@pytest.fixture
def pg_logins(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Two login roles of the test's own (support, supervisor) on the test database: their
    URLs by role. Dropped afterwards (login roles are the cluster's, not the database's)."""
    if not PG_URL:
        pytest.skip("needs PostgreSQL: set CPMS_TEST_DATABASE_URL")
    url = make_url(normalise_url(request.getfixturevalue("pg_database")))
    suffix = uuid.uuid4().hex[:8]
    names = {"support": f"cpms_t_sup_{suffix}", "supervisor": f"cpms_t_svr_{suffix}"}
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE ROLE {name} LOGIN"))
    yield {
        role: url.set(username=name).render_as_string(hide_password=False)
        for role, name in names.items()
    }
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()


def test_postgresql_agents_are_their_login_roles_and_the_database_enforces_it(
    pg_url: str, pg_logins: dict[str, str]
) -> None:
    admin_cli = Cli(Settings(database_url=pg_url, pepper=TEST_PEPPER), FakeClock())
    nir = "185057800608491"
    added = admin_cli(
        "member", "add", "--nir", nir, "--last-name", "Dupont", "--first-name", "Jean",
        "--street", "1 rue de la Paix", "--postcode", "75002", "--city", "Paris", "--no-welcome",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    names = {role: make_url(url).username for role, url in pg_logins.items()}
    for role, name in names.items():
        assert admin_cli("agent", "add", str(name), "--role", role).exit_code == 0

    support = admin_cli.with_settings(database_url=pg_logins["support"])
    supervisor = admin_cli.with_settings(database_url=pg_logins["supervisor"])
    unlocked = support("--agent", "postgres", "account", "unlock", nir, "--reason", "called")
    assert unlocked.exit_code == 0, unlocked.stderr
    [event] = json.loads(admin_cli("--json", "audit", "list", "--action", "account.unlock").stdout)
    assert (event["agent"], event["label"]) == (names["support"], "postgres")
    refused = support("members", "export")
    assert (refused.exit_code, refused.stdout, refused.stderr.strip()) == (
        1,
        "",
        f"Error: not allowed: members export needs supervisor ({names['support']} is support)",
    )
    exported = supervisor("members", "export")
    assert exported.exit_code == 0 and nir in exported.stdout

    # The same agent with psql: the database refuses what the role does not allow.
    engine = create_engine(normalise_url(pg_logins["support"]))
    try:
        for statement in (
            "UPDATE audit_event SET reason = 'nothing happened'",
            "DELETE FROM audit_event",
            f"UPDATE agent SET role = 'admin' WHERE name = '{names['support']}'",
            "INSERT INTO agent (name, role, added_at, added_by) "
            "VALUES ('mallory', 'admin', now(), 'mallory')",
            "DELETE FROM agent",
            "DELETE FROM pepper_key",  # every login and code would stop until an upgrade
            "UPDATE pepper_key SET fingerprint = repeat('0', 64)",
            "INSERT INTO pepper_key (id, fingerprint, created_at) VALUES (9, 'x', now())",
        ):
            with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission"):
                conn.execute(text(statement))
        with engine.connect() as conn:  # what support does need, it has
            assert conn.execute(text("SELECT count(*) FROM member")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM pepper_key")).scalar_one() == 1

        # Disabled, the login role leaves its group: the database refuses it too.
        assert (
            admin_cli("agent", "disable", str(names["support"]), "--reason", "left").exit_code == 0
        )
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission"):
            conn.execute(text("SELECT count(*) FROM member"))
        refused = support("member", "show", nir)  # the command says so, not "not ready"
        assert (refused.exit_code, refused.stderr.strip()) == (
            1,
            "Error: not allowed by the database: permission denied for table alembic_version "
            "(is this login role an enabled agent of this database? is the command the owner's?)",
        )
        checks = json.loads(support("--json", "doctor").stdout)  # not "run db upgrade"
        (pepper,) = [check for check in checks if check["name"] == "pepper"]
        assert pepper["detail"].startswith("not allowed by the database: permission denied")
    finally:
        engine.dispose()


def test_two_admins_disabling_each_other_at_once_leave_one_and_no_deadlock(
    pg_url: str, pg_logins: dict[str, str], tmp_path: Path
) -> None:
    """The only two admins disable each other at the same moment. The first is held with its
    locks taken while the second starts and waits on them: once the first commits, the second,
    disabled by then, is refused by the database in plain words, not aborted by a deadlock;
    one admin remains."""
    from tests.process_helpers import cli_popen

    admin_cli = Cli(Settings(database_url=pg_url, pepper=TEST_PEPPER), FakeClock())
    first_url, second_url = pg_logins["support"], pg_logins["supervisor"]
    first, second = (str(make_url(url).username) for url in (first_url, second_url))
    for name in (first, second):
        assert admin_cli("agent", "add", name, "--role", "admin").exit_code == 0
    me = runner_identity(admin_cli.settings.database_url)
    assert admin_cli("agent", "disable", me, "--reason", "handed over").exit_code == 0

    def start(url: str, target: str, hold: dict[str, str]) -> subprocess.Popen[str]:
        env = {**os.environ, **admin_cli.env(), "CPMS_DATABASE_URL": url, **hold}
        return cli_popen(
            ["agent", "disable", target, "--reason", "left"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def waiting_on_a_lock(user: str) -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE usename = :user AND wait_event_type = 'Lock'"
                    ),
                    {"user": user},
                ).scalar_one()
            )

    held_here = tmp_path / "held"
    engine = create_engine(normalise_url(admin_cli.settings.database_url))
    one = start(first_url, second, {"CPMS_HOLDPOINT": f"agents.locked={held_here}"})
    try:
        wait_until(lambda: one.poll() is not None or held_here.exists(), what="the first to hold")
        assert one.poll() is None, one.communicate()
        two = start(second_url, first, {})
        wait_until(
            lambda: two.poll() is not None or waiting_on_a_lock(second),
            what="the second to wait on the first's locks",
        )
    finally:
        held_here.unlink(missing_ok=True)
        engine.dispose()
    outcomes = [(p.wait(timeout=60), p.communicate()[1].strip()) for p in (one, two)]
    assert outcomes == [
        (0, ""),
        (
            1,
            "Error: not allowed by the database: permission denied for table agent "
            "(is this login role an enabled agent of this database? is the command the owner's?)",
        ),
    ]
    first_cli = admin_cli.with_settings(database_url=first_url)
    agents = json.loads(first_cli("--json", "agent", "list").stdout)
    assert [a["name"] for a in agents if a["role"] == "admin" and a["disabled_at"] is None] == [
        first
    ]
    # The remaining admin is not the owner, yet may manage agents: it brings the other back.
    assert first_cli("agent", "add", second, "--role", "admin").exit_code == 0
    back = admin_cli.with_settings(database_url=second_url)("--json", "agent", "list")
    assert back.exit_code == 0, back.stderr


# --- Two CPMS databases on one cluster: each its own groups ---------------------------------


@pytest.fixture
def login_role(request: pytest.FixtureRequest) -> Iterator[str]:
    """A login role of the test's own, dropped afterwards."""
    if not PG_URL:
        pytest.skip("needs PostgreSQL: set CPMS_TEST_DATABASE_URL")
    with created_login(PG_URL) as name:
        yield name


def _upgraded_database(stack: ExitStack) -> Cli:
    """A new database on the test cluster, upgraded by its owner (who is its admin)."""
    url = stack.enter_context(new_pg_database())
    engine = make_engine(url)
    upgrade_schema(engine)
    record_test_pepper(engine)
    engine.dispose()
    return Cli(Settings(database_url=url, pepper=TEST_PEPPER), FakeClock())


def _as(cli: Cli, login: str) -> Engine:
    return create_engine(make_url(normalise_url(cli.settings.database_url)).set(username=login))


def test_an_agent_s_role_in_one_database_neither_takes_nor_gives_rights_in_another(
    login_role: str,
) -> None:
    """Staging and production on one cluster: alice is support in production and admin in
    staging. Being added, then disabled, in staging leaves her production rights as they
    were: she still reads members there, and still may not make herself admin there."""
    with ExitStack() as stack:
        production, staging = _upgraded_database(stack), _upgraded_database(stack)
        assert production("agent", "add", login_role, "--role", "support").exit_code == 0
        assert staging("agent", "add", login_role, "--role", "admin").exit_code == 0
        in_production = _disposed(stack, _as(production, login_role))
        with in_production.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM member")).scalar_one() == 0
        with in_production.connect() as conn, pytest.raises(ProgrammingError, match="permission"):
            conn.execute(text(f"UPDATE agent SET role = 'admin' WHERE name = '{login_role}'"))
        assert staging("agent", "disable", login_role, "--reason", "left").exit_code == 0
        with in_production.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM member")).scalar_one() == 0
        [alice] = [
            a
            for a in json.loads(production("--json", "agent", "list").stdout)
            if a["name"] == login_role
        ]
        assert (alice["role"], alice["disabled_at"]) == ("support", None)


def test_0015_moves_the_agents_off_the_cluster_s_shared_groups(login_role: str) -> None:
    """A database upgraded before 0015 gave its privileges to `cpms_support`, ..., shared by
    the cluster. After the upgrade the agent works through this database's own group, and the
    shared groups hold nothing here; they and their members stay for the other databases."""
    legacy = [f"cpms_{role}" for role in ("support", "supervisor", "admin", "portal", "nightly")]
    admin = create_engine(normalise_url(str(PG_URL)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        made = [
            group
            for group in legacy
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :g"), {"g": group}).first()
            is None
        ]
        for group in made:
            conn.execute(text(f"CREATE ROLE {group} NOLOGIN"))
    try:
        with ExitStack() as stack:
            cli = _upgraded_database(stack)
            assert cli("agent", "add", login_role, "--role", "support").exit_code == 0
            engine = _disposed(stack, make_engine(cli.settings.database_url))
            migrate(engine, "0014", down=True)
            with engine.begin() as conn:  # as 0014's grants left it
                conn.execute(text(f'REVOKE "cpms_support@{_database(conn)}" FROM {login_role}'))
                conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {legacy[0]}"))
                conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {legacy[0]}"))
                conn.execute(text(f"GRANT {legacy[0]} TO {login_role}"))
            migrate(engine, "head")
            with engine.connect() as conn:
                assert not conn.execute(
                    text("SELECT has_table_privilege(:g, 'member', 'SELECT')"), {"g": legacy[0]}
                ).scalar_one()
                assert conn.execute(
                    text("SELECT pg_has_role(:login, :g, 'MEMBER')"),
                    {"login": login_role, "g": legacy[0]},
                ).scalar_one()
            alice = _disposed(stack, _as(cli, login_role))
            with alice.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM member")).scalar_one() == 0
                with pytest.raises(ProgrammingError, match="permission"):
                    conn.execute(text("DELETE FROM audit_event"))
    finally:
        with admin.connect() as conn:
            for group in made:
                conn.execute(text(f"DROP ROLE {group}"))
        admin.dispose()


def test_no_two_database_names_share_a_group() -> None:
    """Long names are cut and gain a digest; a short name made to read like a cut one (an
    attacker who may name a database) gains its own."""
    long_a, long_b = "x" * 60 + "a", "x" * 60 + "b"
    posing = group_name(Role.admin, long_a).removeprefix("cpms_admin@")
    databases = (long_a, long_b, "cpms", posing)
    names = {group_name(role, db) for role in Role for db in databases}
    assert len(names) == len(databases) * len(Role)
    assert all(len(name.encode()) <= 63 for name in names)
    assert group_name(Role.support, "cpms") == "cpms_support@cpms"
    assert len(group_name(Role.supervisor, "é" * 31).encode()) <= 63  # never half a letter


def test_a_copied_database_gives_nothing_through_its_source_s_groups(login_role: str) -> None:
    """A copy of production (CREATE DATABASE ... TEMPLATE, as a restore into staging) holds
    production's grants. Upgraded, it answers to its own groups only: disabling an agent in
    the copy takes their rights there, and leaves production's alone."""
    admin = create_engine(normalise_url(str(PG_URL)), isolation_level="AUTOCOMMIT")
    with ExitStack() as stack:
        stack.callback(admin.dispose)
        production = _upgraded_database(stack)
        assert production("agent", "add", login_role, "--role", "admin").exit_code == 0
        # An agent off-boarded by the DBA (NOLOGIN) does not stop the copy's upgrade.
        gone = stack.enter_context(created_login(str(PG_URL)))
        assert production("agent", "add", gone, "--role", "support").exit_code == 0
        with admin.connect() as conn:
            conn.execute(text(f"ALTER ROLE {gone} NOLOGIN"))
        source = make_url(production.settings.database_url).database
        copy = f"{source}_copy"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"'))

        @stack.callback
        def drop_copy() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)'))
                for group in groups_of(copy).values():
                    conn.execute(text(f'DROP ROLE IF EXISTS "{group}"'))

        staging = production.with_settings(
            database_url=make_url(production.settings.database_url)
            .set(database=copy)
            .render_as_string(hide_password=False)
        )
        upgraded = staging("db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.stderr
        assert staging("agent", "disable", login_role, "--reason", "left").exit_code == 0
        in_staging = _disposed(stack, _as(staging, login_role))
        with in_staging.connect() as conn, pytest.raises(ProgrammingError, match="permission"):
            conn.execute(text("UPDATE agent SET disabled_at = NULL"))
        with _disposed(stack, _as(production, login_role)).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM agent")).scalar_one() == 3


def test_an_upgrade_leaves_in_the_groups_only_the_enabled_agents(login_role: str) -> None:
    """Groups left by a dropped database of the same name keep their members: whoever the
    upgrade finds in this database's groups, and is no enabled agent, is taken out."""
    with ExitStack() as stack:
        cli = _upgraded_database(stack)
        engine = _disposed(stack, make_engine(cli.settings.database_url))
        with engine.begin() as conn:
            conn.execute(text(f'GRANT "cpms_admin@{_database(conn)}" TO {login_role}'))
        with _disposed(stack, _as(cli, login_role)).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM member")).scalar_one() == 0
        assert cli("db", "upgrade").exit_code == 0
        after = _disposed(stack, _as(cli, login_role))
        with after.connect() as conn, pytest.raises(ProgrammingError, match="permission"):
            conn.execute(text("SELECT count(*) FROM member"))


def _database(conn: Connection) -> str:
    return str(conn.execute(text("SELECT current_database()")).scalar_one())


def _disposed(stack: ExitStack, engine: Engine) -> Engine:
    stack.callback(engine.dispose)
    return engine
