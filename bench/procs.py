"""What the benchmarks read of the machine and of their processes from /proc (Linux): how fast
a core runs here, a process's stat fields, the processes below one, and their peak memory while
they run."""

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def calibration() -> float:
    """CPU seconds of a pure-Python loop of 10 million additions: how fast this machine is."""
    started, total = time.process_time(), 0
    for number in range(10_000_000):
        total += number
    return time.process_time() - started


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's name (the state first); OSError once the
    process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def high_water_kib(pid: int) -> int:
    """The process's RSS high-water mark (VmHWM); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process has just exited
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> dict[int, float]:
    """Every process below `pid` (a command, its helpers, a pool's forkserver and workers) ->
    CPU seconds used so far."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = stat_fields(int(entry.name))
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return {child: cpu[child] for child in found}


class HighWater:
    """The peak memory of every process below this one, from now until `stop()`: each one's
    VmHWM in KiB, read every 50 ms. Not wait4's ru_maxrss: a child starts with the peak of
    the process that started it (a bench that has held a million rows by then)."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for pid in descendants(os.getpid()):
                self.peaks[pid] = max(self.peaks.get(pid, 0), high_water_kib(pid))

    def stop(self) -> dict[int, int]:
        """Each process's peak, in KiB."""
        self._done.set()
        self._thread.join()
        return self.peaks
