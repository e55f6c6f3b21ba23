"""Options shared by several commands, and the values bash completes for them."""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from cpms_admin.vocabulary import MemberStatus

# Every listing's `--all`: the limit is dropped.
AllRows = Annotated[bool, typer.Option("--all", help="List every match, without a limit.")]


def not_stdout(value: Path | None) -> Path | None:
    """`--out -` of a command that writes a file or a directory: refused, not a file named -."""
    if value == Path("-"):
        raise typer.BadParameter("this command writes a file, not standard output: give a path")
    return value


def folder_given(value: str) -> Path:
    """A folder option's value: an empty one (a script's unset variable) is refused, not
    taken for the working directory."""
    if not value.strip():
        raise typer.BadParameter("empty: give the folder's path")
    return Path(value)


# Every agent action's `--reason`.
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")]


def completes(values: Iterable[str]) -> Callable[[str], list[str]]:
    """Bash completion for an option that takes one of `values`."""
    choices = tuple(values)

    def complete(incomplete: str) -> list[str]:
        return [value for value in choices if value.startswith(incomplete)]

    return complete


MEMBER_STATUSES = completes(MemberStatus)
FILE_FORMATS = completes(("csv", "jsonl", "xlsx"))
