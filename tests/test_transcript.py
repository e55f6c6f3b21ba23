"""docs/support-session.md is the README's tour run for real (scripts/transcript.py): an edit
of the tour without regenerating the session fails here, every placeholder of the tour gets
a value, and the script runs the tour against a copy of a demo database, leaving it as it was.
"""

import os
import re
import sqlite3
from pathlib import Path

import pytest

from scripts.transcript import (
    Cast,
    TourCommand,
    normalise,
    substitute,
    tour_commands,
    without_comment,
    write,
)
from tests.warm_cli import cli_popen, cli_run

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SESSION = ROOT / "docs" / "support-session.md"
CAST = Cast(caller="272126996306683", leaver="178069935004281", newcomer="291046912304592")


def tour_run_by(session: str) -> list[str]:
    return re.findall(r"^Tour: `(.*)`$", session, re.MULTILINE)


def test_the_session_ran_the_readme_s_tour_as_it_is_now() -> None:
    ran = tour_run_by(SESSION.read_text(encoding="utf-8"))
    tour = [normalise(command.text) for command in tour_commands(README)]
    assert len(tour) >= 10
    assert ran == tour, (
        "docs/support-session.md ran another tour than the README's: regenerate it with "
        "`make docs` (or `.venv/bin/python scripts/transcript.py`) and commit it"
    )


def test_each_command_of_the_session_shows_what_it_printed() -> None:
    session = SESSION.read_text(encoding="utf-8")
    assert re.search(r"^Run on \d{1,2} \w+ \d{4} \(Paris\)\.", session, re.MULTILINE)
    runs = re.findall(r"^Tour: `.*`\n\n```console\n\$ cpms-admin (.*)\n", session, re.MULTILINE)
    assert len(runs) == len(tour_run_by(session))
    assert "Traceback" not in session and "\x1b" not in session


def test_every_placeholder_of_the_tour_gets_a_value_of_the_demo() -> None:
    for command in tour_commands(README):
        words = substitute(command, CAST)
        assert not [w for w in words if re.fullmatch(r"[A-Z]{1,3}|\[.*|.*\]", w)], command.text
        nirs = {w.replace(" ", "") for w in words if re.fullmatch(r"[\d ]{15,21}", w)}
        assert nirs <= {CAST.caller, CAST.leaver, CAST.newcomer}, command.text


def test_the_roles_of_the_cast() -> None:
    def run(text: str) -> list[str]:
        line = without_comment(text)
        return substitute(TourCommand(line, tuple(line.split()[1:])), CAST)

    assert run("cpms-admin member close NIR --reason x") == [
        "member", "close", CAST.leaver, "--reason", "x",
    ]  # fmt: skip
    assert run("cpms-admin member add --nir N --city C [--email E]")[:4] == [
        "member", "add", "--nir", CAST.newcomer,
    ]  # fmt: skip
    assert run("cpms-admin account status NIR  # why") == ["account", "status", CAST.caller]


def test_tour_lines_are_read_as_the_shell_would() -> None:
    readme = (
        "## A tour for support agents\n\n```\n"
        'cpms-admin member update NIR --reason "call #2"   # a comment\n'
        "cpms-admin member add --nir N --last-name L\n"
        "                      [--country GB]\n\n"
        "cpms-admin member show '1 85 05 78 006 084 91'\n"
        "```\n\n## Next\n\n```\ncpms-admin doctor\n```\n"
    )
    tour = tour_commands(readme)
    assert [normalise(command.text) for command in tour] == [
        'cpms-admin member update NIR --reason "call #2"',
        "cpms-admin member add --nir N --last-name L [--country GB]",
        "cpms-admin member show '1 85 05 78 006 084 91'",
    ]
    assert tour[0].words == ("member", "update", "NIR", "--reason", "call #2")
    assert substitute(tour[2], CAST) == ["member", "show", "2 72 12 69 963 066 83"]


def dump(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return list(connection.iterdump())


@pytest.mark.slow  # a dozen processes of the installed command
def test_the_script_runs_the_tour_on_a_copy_of_the_demo_database(tmp_path: Path) -> None:
    """Its commands forked warm (tests/warm_cli.py), as `make docs` starts the installed one."""
    database = tmp_path / "demo" / "demo.db"
    database.parent.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CPMS_")}
    env.update(HOME=str(tmp_path), CPMS_AGENT="demo.agent")

    def cpms(*args: str) -> None:
        cli_run(["--db", f"sqlite:///{database}", *args], env=env, check=True, cwd=tmp_path)

    cpms("db", "upgrade")
    for nir, first, city, postcode in (
        ("272126996306683", "Hélène", "Lyon", "69003"),
        ("178069935004281", "Youssef", "Paris", "75011"),
    ):
        cpms(
            "member", "add", "--nir", nir, "--first-name", first, "--last-name", "Martin",
            "--email", f"member{nir[-2:]}@exemple.fr", "--street", "1 rue de la Paix",
            "--postcode", postcode, "--city", city,
        )  # fmt: skip
    before = dump(database)
    out = tmp_path / "session.md"
    write(database, out, start=cli_popen)
    session = out.read_text(encoding="utf-8")
    assert tour_run_by(session) == [normalise(command.text) for command in tour_commands(README)]
    assert "the caller, Hélène MARTIN (`2 72 12 69 963 066 83`)" in session
    assert "Unlocked 2 72 12 69 963 066 83 (was cooldown" in session
    assert "\x1b" not in session and "Traceback" not in session
    assert dump(database) == before  # the demo database is left as it was
