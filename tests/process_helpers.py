"""Helpers for the tests that run `cpms-admin` as real processes: the installed command, the
helper processes a run starts, and ways to meet a run at a known point of its work.

A test never sleeps to let a run get somewhere: it waits for something it can see (a row, a
file) with a deadline, or holds the run at a point it cannot pass until the test lets it go.
"""

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CPMS = Path(sys.executable).parent / "cpms-admin"  # the installed entry point


def wait_until(condition: Callable[[], object], *, what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; fail naming `what` if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting, after {timeout:g} s, for {what}"
        time.sleep(0.02)


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


class HeldAtFirstReport:
    """A run started with its stderr on a pipe that is already full: its first line on stderr
    (a `letters batch: ...` report) cannot be written, so the run stops right there until
    `release()` drains the pipe. Everything the run did before that line is done; nothing after
    it is. Linux only (it sizes the pipe to one page with F_SETPIPE_SZ)."""

    def __init__(self, command: list[str], *, env: dict[str, str]) -> None:
        self._read, write = os.pipe()
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
        os.set_blocking(write, False)
        self._filler = 0
        try:
            while True:
                self._filler += os.write(write, b"#" * 4096)
        except BlockingIOError:
            pass  # full: the next write blocks, whatever its size
        os.set_blocking(write, True)
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=write, text=True
        )
        os.close(write)

    def release(self, timeout: float = 120) -> tuple[int, str, str]:
        """Let the run go on and wait for its end: (exit code, stdout, stderr)."""
        chunks: list[bytes] = []

        def drain() -> None:
            while chunk := os.read(self._read, 65536):
                chunks.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            stdout, _ = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            reader.join(timeout)
            os.close(self._read)
        stderr = b"".join(chunks)[self._filler :].decode()
        return self.process.returncode, stdout, stderr
