"""Failpoints: named places where the tests kill a real run, to prove it can be run again.

`failpoint("letters.before_commit")` does nothing unless the environment variable
`CPMS_FAILPOINT` holds exactly that name, in which case the process kills itself with
SIGKILL on the spot (no clean-up, no `finally`), as a power cut or the OOM killer would.
It exists for tests only (the fault tests: letters, imports, mail send, private files);
production never sets the variable.
The check is one dictionary lookup, so failpoints can sit on hot paths.
"""

import os
import signal

ENV_VAR = "CPMS_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
