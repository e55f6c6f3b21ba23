"""`make demo` (scripts/demo.py) reads right in a terminal and in a file: no escape codes
off a terminal, each command's output in the order it was written, the day of the run,
e-mails in the member's name, and a closing hint that works as printed."""

import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from scripts import demo
from scripts.demo_members import demo_members
from tests.process_helpers import CPMS

ROOT = Path(__file__).parent.parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_headings_are_bold_only_on_a_terminal_without_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert demo.bold("== Schema", io.StringIO()) == "== Schema"  # a file, a pipe
    assert demo.bold("== Schema", Terminal()) == "\033[1m== Schema\033[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert demo.bold("== Schema", Terminal()) == "== Schema"


def test_a_step_redirected_to_a_file_has_no_escape_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    demo.step("Schema")
    assert capsys.readouterr().out == "\n== Schema\n"


@pytest.mark.slow
def test_a_command_s_stderr_and_stdout_are_shown_in_the_order_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        demo,
        "ENV",
        {**demo.ENV, "CPMS_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "CPMS_PEPPER": "p"},
    )
    demo.run("db", "upgrade")
    capsys.readouterr()
    demo.run(
        "member", "add", "--nir", "2 85 05 75 056 123 38", "--last-name", "Martin",
        "--first-name", "Anne", "--street", "145 boulevard du Maréchal de Lattre de Tassigny",
        "--postcode", "94240", "--city", "L'Haÿ-les-Roses", "--no-welcome",
    )  # fmt: skip
    command, *shown = capsys.readouterr().out.splitlines()
    # The note is written (stderr) before the result (stdout), so it is shown first.
    assert command.startswith("$ cpms-admin member add --nir '2 85 05 75 056 123 38'")
    assert [line.split(" ")[2] for line in shown] == ["Note:", "Added"]


def test_reasons_carry_the_day_of_the_run_not_a_fixed_date() -> None:
    source = (ROOT / "scripts" / "demo.py").read_text(encoding="utf-8")
    assert not re.search(r"du \d\d/\d\d", source)
    assert re.fullmatch(r"\d\d/\d\d", demo.today())


def test_a_member_s_new_e_mail_is_in_their_own_name() -> None:
    for member in demo_members(36):
        first, last = demo.new_email(member).split("@")[0].split(".", 1)
        assert (first, last) == (
            demo.ascii_only(member["first_name"]).lower(),
            demo.ascii_only(member["last_name"]).lower().replace(" ", ""),
        )
    assert demo.new_email(demo_members(2)[1]).startswith("helene.durand@")


@pytest.mark.slow
def test_the_closing_hint_works_as_printed_from_the_project_folder(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no CPMS_*, cpms-admin not on PATH
    database = tmp_path / "demo.db"
    subprocess.run(
        [CPMS, "--db", f"sqlite:///{database}", "db", "upgrade"], env=env, check=True
    )  # the pepper is made beside the database, as the demo's is
    hint = demo.try_this(db=database)
    assert shlex.split(hint)[0] != "cpms-admin"
    result = subprocess.run(
        shlex.split(hint), cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert demo.try_this().startswith(
        f"{Path(demo.CLI).relative_to(ROOT)} --db sqlite:///data/demo.db member list"
        if Path(demo.CLI).is_relative_to(ROOT)
        else f"{demo.CLI} --db sqlite:///data/demo.db member list"
    )
