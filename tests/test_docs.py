"""The project's documentation stays true: the command reference is what the commands say
now."""

import difflib
import re
from pathlib import Path

import pytest

from scripts.command_reference import OUT, REGENERATE, render

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)


def test_the_command_reference_is_what_the_commands_say_now() -> None:
    committed = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    now = render()
    if committed != now:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    now.splitlines(keepends=True),
                    "docs/commands.md (committed)",
                    "docs/commands.md (from the commands now)",
                )
            )[:60]
        )
        pytest.fail(
            "docs/commands.md differs from the commands' help: regenerate it with "
            f"`make docs` (or `{REGENERATE}`) and commit it.\n{diff}"
        )
