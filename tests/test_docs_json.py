"""The JSON documents of docs/scripting.md are the commands' own: each example has exactly the
keys the command prints, at every level, so a key added, renamed or dropped shows here."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cli
from tests.import_helpers import person, write_csv

GUIDE = Path(__file__).parent.parent / "docs" / "scripting.md"
NIR = "185057800608491"
# Objects whose keys are data (an audit event's details, counts by reason), not a shape.
OPAQUE = {"details", "cancelled_by_reason"}


def examples() -> list[Any]:
    blocks = re.findall(r"^```json\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.M | re.S)
    return [json.loads(block) for block in blocks]


def shape(value: Any, key: str = "") -> Any:
    """The keys of a document at every level (a list by its first item)."""
    if key in OPAQUE:
        return "object"
    if isinstance(value, dict):
        return {name: shape(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def printed(cli: Cli, *args: str, input: str | None = None) -> Any:
    result = cli("--json", *args, input=input)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_every_json_example_of_the_guide_is_valid_and_checked() -> None:
    assert len(examples()) == 16, "a new JSON example: check it in the test below too"


@pytest.mark.slow  # renders one letter
def test_each_command_prints_the_keys_of_its_example(cli: Cli, tmp_path: Path) -> None:
    cli(
        "member", "add", "--nir", NIR, "--last-name", "Martin", "--first-name", "Jean",
        "--email", "jean@example.org", "--street", "3 rue de la Paix", "--postcode", "75002",
        "--city", "Paris",
    )  # fmt: skip
    issued = printed(cli, "code", "issue", NIR, "--channel", "email", "--reason", "test")
    login = printed(cli, "portal", "login", NIR, input="482915\n")
    member = printed(cli, "member", "show", NIR)
    account = printed(cli, "account", "status", NIR)
    letter = printed(cli, "letters", "list")[0]
    event = printed(cli, "audit", "list")[0]
    verified = printed(cli, "audit", "verify")
    agent = printed(cli, "agent", "list")[0]
    pepper = printed(cli, "pepper", "status")[0]
    check = printed(cli, "doctor")[0]
    imported = printed(cli, "members", "import", str(write_csv(tmp_path / "m.csv", [person(7)])))
    exported = printed(cli, "members", "export", "--out", str(tmp_path / "out.csv"))
    sent = printed(cli, "mail", "send")
    batch = printed(cli, "letters", "batch", "--out", str(tmp_path / "print"))
    purged = printed(cli, "purge")
    dossier_file = tmp_path / "dossier.json"
    printed(cli, "member", "dossier", NIR, "--out", str(dossier_file))
    dossier = json.loads(dossier_file.read_text(encoding="utf-8"))
    real = {
        "member show": member,
        "account status": account,
        "portal login": login,
        "code issue": issued,
        "members import": imported,
        "members export": exported,
        "letters batch": batch,
        "mail send": sent,
        "purge": purged,
        "member dossier": dossier,
        "letters list": letter,
        "audit list": event,
        "agent list": agent,
        "pepper status": pepper,
        "doctor": check,
        "audit verify": verified,
    }
    for example, (command, document) in zip(examples(), real.items(), strict=True):
        assert shape(document) == shape(example), (
            f"`{command} --json` prints other keys than its example in docs/scripting.md: "
            "update the example"
        )
