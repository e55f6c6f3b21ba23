"""Under cron, a job with nothing to do says nothing: cron mails any output, on either stream.

`cpms-admin` runs as a process of its own (forked warm: tests/warm_cli.py) as cron runs it:
no terminal on stdin, stdout or stderr, from another directory, against a database made by
`db upgrade`. Real work still reports (its summary on stdout, plain log lines on stderr),
`--json` always prints its document, and a failure is one `Error: ...` line on stderr with a
non-zero exit. (What the interpreter or an import might print as a process starts is the
entry point's test: test_entrypoint.py.)
"""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cpms_admin.db import sqlite_path
from cpms_admin.mail.queue import STOP_AFTER
from tests.factories import make_nir
from tests.harness import TEST_PEPPER, Cli
from tests.import_helpers import person, write_csv
from tests.mail_helpers import free_port
from tests.process_helpers import cli_popen, cli_run

pytestmark = pytest.mark.slow  # every test runs the command as processes


class Cron:
    """The command run as cron runs it. What an agent does beforehand (add members,
    queue a campaign) runs in-process through `agent`, on the same database: only the jobs
    need to be real processes."""

    def __init__(self, env: dict[str, str], cwd: Path, agent: Cli) -> None:
        self.env, self.cwd, self.agent = env, cwd, agent

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return cli_run(
            list(args),
            env={**self.env, **env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def on_terminal(self, *args: str) -> tuple[int, str]:
        """The command as an agent runs it, on a terminal (stdin, stdout and stderr
        on one pseudo-terminal, 100 columns): its exit code and all it wrote, in order."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        process = cli_popen(
            list(args),
            env={**self.env, "TERM": "xterm-256color"},
            cwd=self.cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        output = bytearray()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            try:
                data = os.read(master, 65536) if ready else b"-"
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not data:
                break
            if ready:
                output += data
        os.close(master)
        return process.wait(timeout=30), output.decode()

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def agent_does(self, *args: str) -> None:
        result = self.agent(*args)
        assert result.exit_code == 0, result.output

    def add_member(self, *, email: str | None = None) -> None:
        contact = ["--email", email, "--no-welcome"] if email else []
        self.agent_does(
            "member", "add", "--nir", make_nir(), "--last-name", "Martin", "--first-name",
            "Hélène", "--street", "12 rue de la République", "--postcode", "69002", "--city",
            "Lyon", *contact,
        )  # fmt: skip


@pytest.fixture
def cron(cli: Cli, db_url: str, tmp_path: Path) -> Cron:
    """On SQLite a new database file made by `db upgrade`; on PostgreSQL the test's database
    (conftest.py upgraded it, and recorded the pepper)."""
    url = db_url
    if sqlite_path(db_url) is not None:
        (tmp_path / "var").mkdir()
        url = f"sqlite:///{tmp_path / 'var' / 'cpms.db'}"
    (tmp_path / "elsewhere").mkdir()
    settings = replace(cli.settings, database_url=url)
    env = Cli(settings).env()
    assert env["CPMS_PEPPER"] == TEST_PEPPER  # explicit: never a default pepper file
    run = Cron({**os.environ, **env, "CPMS_AGENT": "cron"}, tmp_path / "elsewhere", Cli(settings))
    if url != db_url:
        run.ok("db", "upgrade")
    return run


def quiet(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def test_an_empty_letter_queue_prints_nothing(cron: Cron, tmp_path: Path) -> None:
    assert quiet(cron("letters", "batch", "--out", str(tmp_path / "print"))) == (0, "", "")


def test_an_empty_mail_queue_prints_nothing(cron: Cron) -> None:
    assert quiet(cron("mail", "send")) == (0, "", "")


def test_json_always_prints_its_document(cron: Cron, tmp_path: Path) -> None:
    batch = cron("--json", "letters", "batch", "--out", str(tmp_path / "print"))
    assert (batch.returncode, batch.stderr) == (0, "")
    summary: dict[str, Any] = json.loads(batch.stdout)
    assert (summary["batch_id"], summary["printed"], summary["cancelled"]) == (None, 0, 0)
    mail = cron("--json", "mail", "send")
    assert (mail.returncode, mail.stderr) == (0, "")
    assert json.loads(mail.stdout) == {
        "sent": 0,
        "retry": 0,
        "failed": 0,
        "cancelled": 0,
        "left": 0,
        "stopped": None,
    }


def test_a_batch_with_letters_says_one_line_then_the_next_night_is_silent(
    cron: Cron, tmp_path: Path
) -> None:
    cron.add_member()  # queues its enrolment letter
    cron.add_member()
    nir = make_nir()  # a third, whose enrolment letter an e-mailed code makes moot
    cron.agent_does(
        "member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Paul",
        "--street", "3 rue de la Paix", "--postcode", "75002", "--city", "Paris",
        "--email", "paul@example.org",
    )  # fmt: skip
    cron.agent_does("code", "issue", nir, "--channel", "email", "--reason", "called")
    out = tmp_path / "print"
    night = cron("letters", "batch", "--out", str(out))
    (directory,) = out.iterdir()
    # The summary alone: no log line repeats it, no bar.
    assert quiet(night) == (
        0,
        f"Batch 1: 2 letters in 1 PDF file, 2 pages, in {directory}; cancelled 1 moot letter "
        "(newer code: 1).\n",
        "",
    )
    assert quiet(cron("letters", "batch", "--out", str(out))) == (0, "", "")


def test_log_lines_say_only_what_the_summary_does_not(cron: Cron, tmp_path: Path) -> None:
    """A run killed after its commit: the next one finishes it, says so in its one summary
    line, and logs the details (whose run, which batch) on stderr."""
    cron.add_member()
    out = tmp_path / "print"
    killed = cron("letters", "batch", "--out", str(out), CPMS_FAILPOINT="letters.after_commit")
    assert killed.returncode != 0
    night = cron("letters", "batch", "--out", str(out))
    (directory,) = [entry for entry in out.iterdir() if not entry.name.startswith(".")]
    assert quiet(night) == (
        0,
        f"Nothing to print; finished 1 interrupted batch: {directory}.\n",
        "letters batch: batch 1: committed by a run that died while publishing; published "
        f"{directory}\n",
    )


def test_a_batch_failure_is_one_error_line(cron: Cron, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = cron("letters", "batch", "--out", str(tmp_path / "a-file" / "print"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: --out ") and result.stderr.count("\n") == 1


def test_mail_to_a_dead_server_reports_and_stops_with_one_error_line(
    cron: Cron, tmp_path: Path
) -> None:
    dead = {"CPMS_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    cron.add_member(email="helene.martin@example.org")
    cron.agent_does("code", "campaign", "--no-pin", "--channel", "email", "--reason", "x")
    one = cron("mail", "send", **dead)
    assert quiet(one) == (
        0,
        "Sent 0 e-mails; 1 to retry, 0 given up, 0 no longer needed; 1 still queued.\n",
        "",
    )  # work was done: a failure to retry, reported; the next run tries again
    more = tmp_path / "more.csv"  # STOP_AFTER more members
    write_csv(more, [person(990_000 + n, email=f"a{n}@example.org") for n in range(STOP_AFTER)])
    cron.agent_does("members", "import", str(more))
    cron.agent_does("code", "campaign", "--no-pin", "--channel", "email", "--reason", "x")
    stopped = cron("mail", "send", **dead)
    assert stopped.returncode == 1
    assert stopped.stderr.startswith(f"Error: mail send stopped: {STOP_AFTER} e-mails in a row")
    assert stopped.stderr.count("\n") == 1


def screen(output: str) -> str:
    """What is left to read of a terminal's output: no escape sequences, no carriage returns."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).replace("\r", "")


def test_on_a_terminal_too_nothing_to_do_prints_nothing(cron: Cron, tmp_path: Path) -> None:
    assert cron.on_terminal("letters", "batch", "--out", str(tmp_path / "print")) == (0, "")
    assert cron.on_terminal("mail", "send") == (0, "")


def test_on_a_terminal_the_bar_moves_with_each_file_then_leaves_the_summary(
    cron: Cron, tmp_path: Path
) -> None:
    for _ in range(4):
        cron.add_member()
    out = tmp_path / "print"
    # One letter per file, 4 files: rendered by 2 worker processes, forked with the bar on.
    code, output = cron.on_terminal("letters", "batch", "--out", str(out), "--chunk-size", "1",
                                    "--workers", "2")  # fmt: skip
    assert code == 0, output
    shown = [int(p) for p in re.findall(r"(\d+)%", screen(output))]
    assert sorted(set(shown)) == [0, 25, 50, 75, 100]
    assert shown == sorted(shown)  # never back, never stuck: each file moves it on
    assert "letters batch:" not in output  # no plain log line on a terminal
    (directory,) = out.iterdir()
    lines = [line for line in screen(output).splitlines() if line.strip()]
    assert lines[-1] == f"Batch 1: 4 letters in 4 PDF files, 4 pages, in {directory}."
    # The e-mail queue the same way.
    for n in range(2):
        cron.add_member(email=f"m{n}@example.org")
    cron.agent_does("code", "campaign", "--no-pin", "--channel", "email", "--reason", "x")
    code, output = cron.on_terminal("mail", "send")
    assert code == 0, output
    assert sorted(set(int(p) for p in re.findall(r"(\d+)%", screen(output)))) == [0, 50, 100]
    lines = [line for line in screen(output).splitlines() if line.strip()]
    assert (
        lines[-1] == "Sent 2 e-mails; 0 to retry, 0 given up, 0 no longer needed; 0 still queued."
    )
