"""`cpms-admin` as real processes, forked from a warm parent instead of started cold.

Most of a short command's CPU is Python importing Typer, SQLAlchemy and pydantic (about
85%), and the suite runs hundreds of commands as processes: for the concurrency, the kills
and the attack loops, where a process of its own is the point. Here one parent process
imports the command once and forks a child per run; the child sets the run's arguments,
environment, working directory and standard streams, then calls the entry point's `main`.
It is a real process with its own pid: it can be killed with SIGKILL, it takes its own
locks, and its exit status is the one the command gives.

What forking does not reproduce is the interpreter's start-up itself (import errors, signals
during start-up, what a command imports, encoding from the locale): the tests of those
start the installed entry point (`process_helpers.CPMS`), and `CPMS_TEST_EXEC=1` makes every
run here start it too. tests/test_warm_cli.py holds the two ways to the same answers.

    done = cli_run(["--json", "member", "show", nir], env=env, capture_output=True, text=True)
    held = cli_popen(["letters", "batch"], env=env, stdout=subprocess.PIPE)

They take `subprocess.run`'s and `subprocess.Popen`'s arguments. The parent is
tests/warm_parent.py.
"""

import atexit
import json
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

CPMS = Path(sys.executable).parent / "cpms-admin"  # the installed entry point
EXEC = os.environ.get("CPMS_TEST_EXEC") == "1"
PARENT = Path(__file__).with_name("warm_parent.py")
# The parent's environment, as the suite started (no test's settings): the children's is theirs.
PARENT_ENV = dict(os.environ)
# What an interpreter reads as it starts (the streams' encoding, the import path, warnings,
# the hash seed), or a library as the parent imports it (Typer's output): a run that sets
# them otherwise than the suite needs the installed command.
START_VARIABLES = (
    "PYTHONIOENCODING", "PYTHONUTF8", "LC_ALL", "LC_CTYPE", "LANG", "PYTHONPATH",
    "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONHASHSEED", "PYTHONSAFEPATH", "PYTHONOPTIMIZE",
    "TYPER_USE_RICH", "TYPER_STANDARD_TRACEBACK", "_TYPER_STANDARD_TRACEBACK",
    "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS",
    "_TYPER_FORCE_DISABLE_TERMINAL",
)  # fmt: skip
# The helper's status when it ended without writing the command's (killed): exit 255.
NO_STATUS = 255 << 8


class CliPopen(subprocess.Popen[Any]):
    """`subprocess.Popen` of `cpms-admin ARGS`, the child forked from the warm parent.

    Popen's pipes, `communicate`, timeouts and signals are its own; only starting the child
    and collecting its status differ, as the child is the warm parent's (a helper process
    waits for it and writes its pid, then its wait status, to a pipe read here)."""

    def __init__(self, args: list[str], **popen: Any) -> None:
        self._status = b""
        super().__init__([str(CPMS), *args], **popen)

    def _execute_child(  # type: ignore[override]
        self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
        startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
        errread, errwrite, restore_signals, gid, gids, uid, umask,
        start_new_session, process_group,
    ):  # fmt: skip
        assert not (preexec_fn or pass_fds or shell or executable or gid or gids or uid), args
        assert not (start_new_session or process_group not in (None, -1)), args
        run_env = dict(os.environ if env is None else env)
        for name in START_VARIABLES:
            assert run_env.get(name) == PARENT_ENV.get(name), f"{name}: run the installed command"
        assert all(isinstance(arg, str) for arg in args), args  # JSON carries text only
        cwd = os.path.abspath(cwd if cwd is not None else os.curdir)
        if not os.path.isdir(cwd):
            raise FileNotFoundError(2, "No such directory", cwd)  # as Popen raises it
        streams = [fd if fd != -1 else own for own, fd in enumerate((p2cread, c2pwrite, errwrite))]
        self._status_fd, status_w = os.pipe()
        request = {
            "argv": list(map(str, args)),
            "env": run_env,
            "cwd": cwd,
            "umask": umask,
        }
        try:
            _parent().send(json.dumps(request).encode(), [*streams, status_w])
        except BaseException:
            os.close(self._status_fd)
            raise
        finally:  # the child's ends of the pipes Popen made, as Popen closes them
            os.close(status_w)
            for child_end, our_end in (
                (p2cread, p2cwrite),
                (c2pwrite, c2pread),
                (errwrite, errread),
            ):
                if -1 not in (child_end, our_end) and child_end != getattr(self, "_devnull", None):
                    os.close(child_end)
            if hasattr(self, "_devnull"):
                os.close(self._devnull)
            self._closed_child_pipe_fds = True
        self.pid = int(self._line(timeout=60, what="the warm parent to fork the command"))
        self._child_created = True

    def _line(self, *, timeout: float | None, what: str = "") -> bytes | None:
        """The status pipe's next line, waiting up to `timeout` (None: forever); b"" if the
        pipe ended without one."""
        waiting = select.poll()  # not select.select: any descriptor number
        waiting.register(self._status_fd, select.POLLIN)
        while b"\n" not in self._status:
            if not waiting.poll(None if timeout is None else timeout * 1000):
                assert not what, f"no answer from {what}"
                return None
            chunk = os.read(self._status_fd, 64)
            if not chunk:
                return b""
            self._status += chunk
        line, self._status = self._status.split(b"\n", 1)
        return line

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        line = self._line(timeout=0 if wait_flags & os.WNOHANG else None)
        if line is None:
            return 0, 0
        os.close(self._status_fd)
        return self.pid, int(line) if line else NO_STATUS

    def _internal_poll(self, _deadstate: int | None = None, **_: Any) -> int | None:
        """Popen's, over the status pipe. Never raises: `__del__` and `_cleanup` call it."""
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)
            except (OSError, ValueError):
                if _deadstate is not None:
                    self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()
        return self.returncode


def cli_popen(args: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` of `cpms-admin ARGS`: forked warm, or the installed command under
    CPMS_TEST_EXEC=1."""
    if EXEC:
        return subprocess.Popen([str(CPMS), *args], **popen)
    return CliPopen(args, **popen)


def cli_run(
    args: list[str],
    *,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` of `cpms-admin ARGS`, as `cli_popen` starts it."""
    if input is not None:
        if popen.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        popen["stdin"] = subprocess.PIPE
    if capture_output:
        if popen.get("stdout") is not None or popen.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    with cli_popen(args, **popen) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


_lock = threading.Lock()
_channel: "_Channel | None" = None


class _Channel:
    """The test's end of the warm parent: requests (JSON and the child's descriptors) on a
    socket of packets; the parent ends when the socket does."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, str(PARENT), str(theirs.fileno())],
            env=PARENT_ENV,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.socket = ours
        atexit.register(self.close)
        assert ours.recv(16) == b"ready", "the warm parent did not start"

    def send(self, message: bytes, fds: list[int]) -> None:
        with _lock:
            socket.send_fds(self.socket, [message], fds)

    def close(self) -> None:
        self.socket.close()
        self.process.wait(timeout=120)


def start_warm_parent() -> None:
    """Have the warm parent ready (its imports take a second or two): for a test that times
    its first warm run."""
    if not EXEC:
        _parent()


def _parent() -> _Channel:
    global _channel
    with _lock:
        if _channel is None:
            _channel = _Channel()
        return _channel
