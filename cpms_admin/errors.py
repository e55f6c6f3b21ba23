"""Typed domain errors, each carrying its exit code (docs/scripting.md)."""


class CpmsError(Exception):
    """An expected failure: the CLI prints its message on one line and exits with `exit_code`."""

    exit_code = 1


class Refused(CpmsError):
    """The rules refuse the action (wrong PIN, locked account, SMTP down...)."""

    exit_code = 1


class InvalidInput(CpmsError):
    """The input is malformed: bad NIR, bad PIN format, unreadable file."""

    exit_code = 2


class NotFound(CpmsError):
    exit_code = 3


class Conflict(CpmsError):
    """The target already exists, or another run holds the lock."""

    exit_code = 4


class CodeSuperseded(Conflict):
    """A code about to be e-mailed was revoked meanwhile, by a newer code that reached the
    member first: it is not sent, as it would open nothing."""


class NotReady(CpmsError):
    """The environment is not ready: schema not upgraded, no pepper, template missing."""

    exit_code = 5


class FieldError(InvalidInput):
    """An invalid value for one named field (import error reports list the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RunFailed(Refused):
    """A bulk run stopped part-way and was settled (its work abandoned or kept whole): the
    message says what state it left and what to run next."""


class Unprintable(Refused):
    """A letter that cannot be laid out as the post needs it (an address too big for the
    envelope's window): that letter fails, the others print."""


class MailError(Refused):
    """Sending failed (server down, login refused, disk full): exit 1, one line, no secret."""


class MailTimeout(MailError):
    """The SMTP session did not finish within its deadline: the server is so slow that a run
    sending many messages should stop at once rather than wait that long for each of them."""


class BadAddress(MailError):
    """An address no mail server would take (malformed, a line break): trying again is
    pointless."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, systemd stopping a job, `kill`): the command stops as Ctrl-C
    stops it, through the same clean-up, and exits 143 (the CLI's `main` installs it)."""


def unreachable(exc: OSError) -> NotReady:
    """A path the deployment names that this user may not open (a folder of 0700, a pepper
    file in another's home): NotReady, naming it, instead of a traceback."""
    where = f" {exc.filename}" if exc.filename else ""
    return NotReady(
        f"cannot open{where} ({exc.strerror or exc}): this user must be able to reach it "
        "(README, Deploying)"
    )
