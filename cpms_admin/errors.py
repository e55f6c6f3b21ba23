"""Typed domain errors, each carrying the exit code of the CLI contract (CLI.md)."""


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


class NotReady(CpmsError):
    """The environment is not ready: schema not upgraded, no pepper, template missing."""

    exit_code = 5


class FieldError(InvalidInput):
    """An invalid value for one named field (import error reports list the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
