"""Every command has help with an example, and the README mentions it."""

from pathlib import Path

import pytest
import typer
from typer.main import get_command

from cpms_admin.cli.app import app

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def all_commands() -> list[tuple[str, object]]:
    root = get_command(app)
    found = []

    def walk(prefix: str, command: object) -> None:
        sub = getattr(command, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(f"{prefix} {name}".strip(), child)
        else:
            found.append((prefix, command))

    walk("", root)
    return found


COMMANDS = all_commands()


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_has_help_with_an_example(name: str, command: typer.core.TyperCommand) -> None:
    assert command.help, f"{name} has no help"
    assert "Example: cpms-admin " in command.help, f"{name} help has no example"


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_command_is_documented_in_the_readme(name: str) -> None:
    assert f"cpms-admin {name}" in README or f"`{name}`" in README
