"""Failpoints: named places where the tests stop a real run, to prove it can be run again.

`failpoint("letters.before_commit")` does nothing unless the environment asks for that name:

- `CPMS_FAILPOINT=letters.before_commit`: the process kills itself with SIGKILL on the spot
  (no clean-up, no `finally`), as a power cut or the OOM killer would;
- `CPMS_HOLDPOINT=letters.after_claim=/tmp/flag`: the process creates the file `/tmp/flag`
  and waits there until it is removed, so a test can act while the run stands exactly at
  that point (start a second run, look at the database) instead of racing it.

They exist for tests only (the fault tests: letters, imports, mail send, private files, a
PIN set while its code dies); production never sets the variables. The check is two
dictionary lookups, so failpoints can sit on hot paths.
"""

import os
import signal
import time
from pathlib import Path

ENV_VAR = "CPMS_FAILPOINT"
HOLD_VAR = "CPMS_HOLDPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    hold = os.environ.get(HOLD_VAR)
    if hold is not None:
        point, _, flag = hold.partition("=")
        if point == name and flag:
            _hold(Path(flag))


def _hold(flag: Path) -> None:
    flag.touch()
    while flag.exists():
        time.sleep(0.01)
