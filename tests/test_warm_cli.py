"""The tests' warm runs (warm_cli.py) answer as the installed command does, on what the
tests that use them look at: exit codes, output, input, signals. (Start-up itself, the
imports and the interpreter's options are the entry point's tests', test_entrypoint.py.)"""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.process_helpers import CPMS, cli_popen, cli_run, run_installed, run_warm, wait_until

NIR = "185057800608491"


@pytest.mark.slow
def test_a_warm_run_gives_what_the_installed_command_gives(tmp_path: Path) -> None:
    """The same commands, each way in a directory of its own: the same exit codes, the same
    words on stdout and stderr."""
    db = ("--db", "sqlite:///cpms.db")
    runs = [
        ("member", "list"),  # no database yet: exit 5 and the fix
        (*db, "db", "upgrade"),
        (*db, "--json", "member", "show", NIR),  # 4, as JSON
        (*db, "member", "add", "--nir", NIR, "--last-name", "Dupont", "--first-name",
         "Zoë", "--street", "1 rue de Paris", "--postcode", "94100", "--city", "Créteil"),
        (*db, "member", "list"),  # a pipe's lines, accents whole
        (*db, "portal", "login", NIR),  # a prompt on a stdin that is empty
        ("member", "list", "--bogus"),  # a usage error
    ]  # fmt: skip
    installed_dir, warm_dir = tmp_path / "installed", tmp_path / "warm"
    installed_dir.mkdir()
    warm_dir.mkdir()
    label = {"CPMS_AGENT": "INC-7"}
    for args in runs:
        installed = run_installed(*args, cwd=installed_dir, env=label)
        warm = run_warm(*args, cwd=warm_dir, env=label)
        assert (warm.returncode, warm.stdout, warm.stderr) == (
            installed.returncode, installed.stdout, installed.stderr
        ), args  # fmt: skip
    added = run_warm(*db, "audit", "list", cwd=warm_dir).stdout
    assert "INC-7" in added  # the run's environment, not the warm parent's


def test_a_warm_run_is_a_process_of_its_own(tmp_path: Path) -> None:
    """Its own pid, stopped by SIGKILL as any process is, its status read as Popen reads it;
    its input and its working directory are the run's."""
    env = {**os.environ, "CPMS_PEPPER": "p", "CPMS_DATABASE_URL": "sqlite:///cpms.db"}
    made = cli_popen(["db", "upgrade"], cwd=tmp_path, env=env, stdout=subprocess.PIPE)
    assert made.wait(timeout=60) == 0
    assert (tmp_path / "cpms.db").exists()  # in its working directory, not the parent's
    prompt = cli_popen(["portal", "login", NIR], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert prompt.pid not in (os.getpid(), made.pid)
    here = tmp_path.resolve()
    wait_until(lambda: Path(f"/proc/{prompt.pid}/cwd").resolve() == here, what="the run")
    assert prompt.poll() is None  # waiting for the PIN on its stdin
    prompt.send_signal(signal.SIGKILL)
    assert prompt.wait(timeout=30) == -signal.SIGKILL
    prompt.communicate()


@pytest.mark.slow
def test_a_warm_run_stopped_by_sigterm_says_what_the_installed_command_says(
    tmp_path: Path,
) -> None:
    """The command's own handlers of the stop signals are installed in a warm run too."""
    said = []
    for way in ("installed", "warm"):
        database = f"sqlite:///{tmp_path / way}.db"
        assert run_warm("--db", database, "db", "upgrade", cwd=tmp_path).returncode == 0
        flag = tmp_path / f"{way}.held"
        env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper", "CPMS_DATABASE_URL": database,
               "CPMS_HOLDPOINT": f"agents.authorized={flag}"}  # fmt: skip
        args = ["member", "list"]
        run = (
            subprocess.Popen([str(CPMS), *args], env=env, stderr=subprocess.PIPE, text=True)
            if way == "installed"
            else cli_popen(args, env=env, stderr=subprocess.PIPE, text=True)
        )
        wait_until(flag.exists, what=f"the {way} run at its hold point")
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
        said.append((run.returncode, stderr))
    assert said[0] == said[1]
    assert said[0][0] == 143, said


def test_a_warm_run_reads_its_input_as_the_installed_command_does(tmp_path: Path) -> None:
    """Lines end at "\n" alone: a carriage return typed into a PIN stays in it."""
    env = {**os.environ, "CPMS_PEPPER": "p", "CPMS_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    assert cli_run(["db", "upgrade"], env=env).returncode == 0
    args = ["portal", "set-pin", NIR, "--with", "pin"]
    typed = b"111111\r222222\r222222\n"
    warm = cli_run(args, env=env, input=typed, capture_output=True)
    installed = subprocess.run([str(CPMS), *args], env=env, input=typed, capture_output=True)
    said = (
        b"Error: expected 3 lines on stdin (code or current PIN, new PIN, new PIN again), got 1\n"
    )
    assert (warm.returncode, warm.stderr) == (installed.returncode, installed.stderr) == (2, said)
