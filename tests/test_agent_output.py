"""What a support agent reads: NIRs they can copy, times in their own time zone, `--json`
where they type it, listings that say when they are cut, completion, one-line usage errors
and help that the terminal wraps (issue: the agent's day)."""

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import termios
from pathlib import Path

import pytest
from sqlmodel import Session

from cpms_admin.members.nir import format_nir
from tests.factories import make_member
from tests.harness import Cli, FakeClock, invoke
from tests.process_helpers import CPMS, cli_popen, cli_run, run_installed, run_warm

# The tests' clock: 2026-11-23 09:00 UTC is 10:00 in Paris (CET, UTC+1).


def test_every_listing_shows_nirs_grouped_and_whole(cli: Cli, session: Session) -> None:
    member = make_member(session)
    cli("account", "unlock", member.nir, "--reason", "test")
    grouped = format_nir(member.nir)
    for listing in (("member", "list"), ("letters", "list"), ("audit", "list")):
        result = cli(*listing)
        assert result.exit_code == 0, result.output
        assert grouped in result.stdout, listing
        assert "•" not in result.stdout
    assert json.loads(cli("--json", "member", "list").stdout)[0]["nir"] == member.nir


@pytest.mark.slow
def test_a_narrow_terminal_never_cuts_a_nir_nor_wraps_an_id(tmp_path: Path) -> None:
    """`letters list` and `audit list` in real terminals. An id wrapped as "4" over "7" is
    another letter's: where the table cannot keep its ids, kinds, statuses, NIRs and times
    whole (60 columns), the terminal gets the tab-separated lines a pipe gets, every column;
    where it can, a table with those columns on one line each, without the columns empty on
    every row, its free text wrapped at spaces under headings kept whole."""
    db = ("--db", f"sqlite:///{tmp_path / 'cpms.db'}")
    assert run_warm(*db, "db", "upgrade", cwd=tmp_path).returncode == 0
    added = run_warm(
        *db, "member", "add", "--nir", "2 92 09 69 833 144 64", "--last-name", "Martin",
        "--first-name", "Hélène", "--street", "3 rue Sala", "--postcode", "69002",
        "--city", "Lyon", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listing = [*db, "letters", "list"]
    narrow = in_terminal(listing, cwd=tmp_path, columns=60).splitlines()
    assert narrow[0] == "Id\tKind\tStatus\tNIR\tQueued\tBatch\tPrinted\tReason"
    assert narrow[1].startswith("1\twelcome\tpending\t2 92 09 69 833 144 64\t")
    nothing = in_terminal([*listing, "--status", "printed"], cwd=tmp_path, columns=60)
    assert nothing.splitlines()[1:] == ["(none)"]  # said, as a table says it
    table = in_terminal(listing, cwd=tmp_path, columns=80)
    row = next(line for line in table.splitlines() if "2 92 09 69 833 144 64" in line)
    # nothing printed yet: no Batch, Printed nor Reason column
    queued = r"2026-\S+ \S+ CES?T"
    assert re.fullmatch(rf"│ 1 +│ welcome +│ pending +│ 2 92 09 69 833 144 64 │ {queued} │", row)

    reason = "called the hotline about the captcha"
    unlocked = run_warm(
        *db, "account", "unlock", "292096983314464", "--reason", reason, cwd=tmp_path
    )
    assert unlocked.returncode == 0, unlocked.stderr
    events = in_terminal([*db, "audit", "list"], cwd=tmp_path, columns=100)
    heading = next(line for line in events.splitlines() if "When" in line)
    assert re.fullmatch(r"┃ # ┃ When +┃ Agent +┃ Action +┃ NIR +┃ Outcome ┃ Reason +┃", heading)
    lines = [line.split("│")[-2].strip() for line in events.splitlines() if line.count("│") > 7]
    assert " ".join(filter(None, lines)) == reason  # wrapped at its spaces, not inside words

    added = run_warm(
        *db, "member", "add", "--nir", "185057800608491", "--last-name", "Dupont",
        "--first-name", "Marie-Christine", "--street", "1 rue de Paris", "--postcode", "94100",
        "--city", "Saint-Maur-des-Fossés", "--email", "marie.christine.dupont@mutuelle.fr",
        cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    for columns in (60, 66):  # three columns to narrow: each within the terminal's edge
        members = in_terminal([*db, "member", "list"], cwd=tmp_path, columns=columns)
        drawn = [line for line in members.splitlines() if line.startswith(("┃", "│", "└"))]
        assert drawn and all(len(line) <= columns and line[-1] in "┃│┘" for line in drawn)
        assert any("1 85 05 78 006 084 91" in line for line in drawn), members


def in_terminal(args: list[str], *, cwd: Path, columns: int) -> str:
    """What `cpms-admin ARGS` draws in a pseudo-terminal `columns` wide."""
    full_env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper"}
    full_env.update(COLUMNS=str(columns), LINES="40", TERM="xterm", NO_COLOR="1")
    main, child = pty.openpty()
    process = cli_popen(args, cwd=cwd, env=full_env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())


def test_human_times_are_paris_time_and_json_stays_utc(
    cli: Cli, session: Session, clock: FakeClock
) -> None:
    member = make_member(session)
    issued = cli("code", "issue", member.nir, "--channel", "email", "--reason", "appel")
    assert issued.exit_code == 0, issued.output
    assert "valid until 2026-11-23 10:10 CET." in issued.stdout  # 10 minutes from 10:00 Paris
    shown = json.loads(cli("--json", "member", "show", member.nir).stdout)
    assert shown["pending_codes"][0]["expires_at"] == "2026-11-23T09:10:00+00:00"
    human = cli("member", "show", member.nir).stdout
    assert "expires 2026-11-23 10:10 CET" in human
    audit = cli("audit", "list", "--limit", "1").stdout.splitlines()
    assert "2026-11-23 10:00 CET" in audit[1]


def test_a_time_copied_from_the_when_column_finds_its_event(
    cli: Cli, session: Session, clock: FakeClock
) -> None:
    """The table says `2026-11-23 10:00 CET`: pasted into --since it means that moment; the
    same time without a zone is UTC (an hour later, in November), as scripts give it."""
    member = make_member(session)
    assert cli("account", "unlock", member.nir, "--reason", "appel").exit_code == 0
    when = cli("audit", "list", "--limit", "1").stdout.splitlines()[1].split("\t")[1]
    assert when == "2026-11-23 10:00 CET"

    def actions(since: str) -> list[str]:
        result = cli("--json", "audit", "list", "--since", since, "--action", "account.unlock")
        return [event["action"] for event in json.loads(result.stdout)]

    assert actions(when) == ["account.unlock"]
    assert actions(when[: -len(" CET")]) == []  # 10:00 UTC is 11:00 in Paris: after it
    assert actions("2026-11-23 09:00 CEST") == ["account.unlock"]  # a summer time, typed in


def test_json_is_accepted_after_the_command(cli: Cli, session: Session) -> None:
    make_member(session)
    before = cli("--json", "audit", "list").stdout
    after = cli("audit", "list", "--json")
    assert after.exit_code == 0, after.output
    assert after.stdout == before
    assert isinstance(json.loads(after.stdout), list)


def test_json_with_an_export_to_stdout_asks_for_a_file_or_json_lines(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    make_member(session)
    refused = cli("--json", "members", "export")
    assert refused.exit_code == 2
    assert json.loads(refused.stdout)["exit_code"] == 2  # no member in it
    assert refused.stderr == (
        "Error: --json prints the export's summary: give --out FILE, or stream the members as "
        "JSON Lines with --format jsonl\n"
    )
    summary = cli("members", "export", "--out", str(tmp_path / "m.csv"), "--json")
    assert json.loads(summary.stdout)["exported"] == 1


def test_a_cut_listing_says_so_on_stderr_only(cli: Cli, session: Session) -> None:
    for _ in range(12):
        make_member(session, welcome=False)
    cut = cli("member", "list", "--limit", "5")
    assert cut.stderr == "5 of 12 shown; --limit N or --all\n"
    assert len(cut.stdout.splitlines()) == 1 + 5
    as_json = cli("--json", "member", "list", "--limit", "5")
    assert len(json.loads(as_json.stdout)) == 5 and as_json.stderr.startswith("5 of 12 shown")
    everyone = cli("member", "list", "--all", "--limit", "5")
    assert everyone.stderr == "" and len(everyone.stdout.splitlines()) == 1 + 12
    assert cli("member", "list", "--limit", "12").stderr == ""
    assert cli("audit", "list", "--limit", "3").stderr.startswith("3 of ")
    assert cli("letters", "list").stderr == ""  # no letters: nothing cut


@pytest.mark.parametrize("search", [None, "martin"])
def test_a_cut_listing_counts_only_so_far(
    cli: Cli, session: Session, monkeypatch: pytest.MonkeyPatch, search: str | None
) -> None:
    """Counting a million matches would cost more than the listing: past the cap (10,000,
    lowered here) the agent reads "10,000+"."""
    monkeypatch.setattr("cpms_admin.db.COUNT_CAP", 4)
    for _ in range(7):
        make_member(session, welcome=False)
    options = ["--search", search] if search else []
    assert cli("member", "list", "--limit", "2", *options).stderr == (
        "2 of 4+ shown; --limit N or --all\n"
    )


@pytest.mark.parametrize(
    ("words", "values"),
    [
        ("cpms-admin letters list --status ",
         ["pending", "claimed", "printed", "cancelled", "failed", "returned"]),
        ("cpms-admin letters preview ", ["welcome", "security_code", "pin_reset"]),
        ("cpms-admin code issue 1 --channel ", ["auto", "email", "post"]),
        ("cpms-admin member list --status a", ["active"]),
        ("cpms-admin members export --format j", ["jsonl"]),
        ("cpms-admin members import x.csv --on-conflict ", ["skip", "update", "fail"]),
        ("cpms-admin audit list --action letter.", ["letter.cancel", "letter.returned",
                                                     "letter.failed", "letter.void"]),
        ("cpms-admin member list --agent ", []),  # a free label: nothing, and no error
        ("cpms-admin member list --agent INC-42 --status a", ["active"]),
    ],
)  # fmt: skip
def test_bash_completes_the_values_agents_type(
    tmp_path: Path, words: str, values: list[str]
) -> None:
    env = {
        **os.environ,
        "_CPMS_ADMIN_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = cli_run([], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert (result.stdout.split(), result.stderr) == (values, "")


def test_completion_can_be_installed_for_bash(tmp_path: Path) -> None:
    """As an agent types it in bash: the shell is found from the parent process (whatever
    started the test suite, the command's parent here is bash)."""
    result = subprocess.run(
        ["bash", "-c", f"{CPMS} --show-completion; exit $?"],  # not exec'd: bash stays the parent
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _cpms_admin_completion cpms-admin" in result.stdout  # files too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["member", "list", "--bogus"],
         "Error: No such option: --bogus (see 'cpms-admin member list --help')\n"),
        (["letters", "preview", "bienvenue", "--out", "x.pdf"],
         "Error: Invalid value for 'kind': 'bienvenue' is not one of 'welcome', "
         "'security_code', 'pin_reset'. (see 'cpms-admin letters preview --help')\n"),
        (["member", "add", "--nir", "1"],
         "Error: Missing option '--last-name'. (see 'cpms-admin member add --help')\n"),
        (["portal", "login", "185057800608491", "482916"],  # a PIN is never echoed
         "Error: Got unexpected extra argument(s) (******) (see 'cpms-admin portal login "
         "--help')\n"),
        (["pin", "482916"],
         "Error: No such command '******'. (see 'cpms-admin pin --help')\n"),
        (["agent", "add", "x"],  # Click lists the choices one a line
         "Error: Missing option '--role'. Choose from: support, supervisor, admin, portal, "
         "nightly (see 'cpms-admin agent add --help')\n"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_warm(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["portal", "accept-terms", "185057800608491", "--version", "2026\nFAKE\x1b[2J\u202e"],
         "Error: the current Terms of Use version is 2026-01, not 2026\\nFAKE\\x1b[2J\\u202e\n"),
        (["audit", "list", "--action", "x\x1b]0;owned\x07\u2028y"],
         "Warning: no event was ever recorded with the action 'x\\x1b]0;owned\\x07\\u2028y'\n"),
    ],
)  # fmt: skip
def test_a_value_quoted_on_stderr_is_escaped_onto_one_line(
    cli: Cli, args: list[str], said: str
) -> None:
    """A value an agent typed, quoted back in an error or a warning, can neither add a line
    nor send the terminal an escape sequence or a bidi override: such characters are
    written as their escapes."""
    result = cli(*args, input="482915\n")
    assert result.stderr == said


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["member", "import", "adherents.csv"], "Did you mean 'members import'?"),
        (["members", "list"], "Did you mean 'member list'?"),
        (["unlock", "185057800608491"], "Did you mean 'account unlock'?"),
        (["list"], "Did you mean 'member list', 'audit list', 'letters list' or 'agent list'?"),
    ],
)
def test_a_command_typed_in_the_wrong_group_is_named(cli: Cli, args: list[str], hint: str) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert hint in result.stderr, result.stderr


def test_a_group_of_another_name_is_not_offered(cli: Cli) -> None:
    """`mail send` sends the queued e-mails: no answer to `code send`."""
    result = cli("code", "send")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: No such command 'send'. (see "), result.stderr


def test_help_is_wrapped_by_the_terminal_with_plain_flags(cli: Cli) -> None:
    for command in (
        ["member", "add"],
        ["mail", "send"],
        ["letters", "batch"],
        ["members", "import"],
    ):
        text = invoke(
            [*command, "--help"],
            env={**cli.env(), "COLUMNS": "72"},
            terminal_width=72,
        ).stdout
        assert "<bool>" not in text and "╭" not in text, command
        lines = text.splitlines()
        assert all(len(line) <= 72 for line in lines if " " in line.strip()), command
        assert any(line.strip().startswith("Example:") for line in lines), command


def test_a_command_typed_alone_shows_its_help(tmp_path: Path) -> None:
    result = run_installed("member", cwd=tmp_path)
    assert result.stderr.startswith("Usage: cpms-admin member [OPTIONS] COMMAND [ARGS]...")
    assert "Add, show, list, update and close members." in result.stderr


def at_an_agents_terminal() -> None:
    """In the child: the pseudo-terminal is its controlling terminal, and Ctrl-C interrupts it
    as at an agent's shell, even when the suite itself was started with SIGINT ignored (as a
    script's background job is)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.slow
def test_ctrl_c_at_a_prompt_is_an_interruption(tmp_path: Path) -> None:
    """An agent typing Ctrl-C at the PIN prompt: exit 130, as Ctrl-C anywhere else (it was
    1, which scripts read as "refused"); no attempt is counted."""
    db = ("--db", f"sqlite:///{tmp_path / 'cpms.db'}")
    assert run_warm(*db, "db", "upgrade", cwd=tmp_path).returncode == 0
    nir = "2 92 09 69 833 144 64"
    added = run_warm(
        *db, "member", "add", "--nir", nir, "--last-name", "Martin", "--first-name", "Hélène",
        "--street", "3 rue Sala", "--postcode", "69002", "--city", "Lyon", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    env = {**os.environ, "CPMS_PEPPER": "subprocess-pepper", "TERM": "xterm"}
    main, child = pty.openpty()
    process = subprocess.Popen(
        [str(CPMS), *db, "portal", "login", nir], cwd=tmp_path, env=env, stdin=child,
        stdout=child, stderr=child, close_fds=True, start_new_session=True,
        preexec_fn=at_an_agents_terminal,
    )  # fmt: skip
    os.close(child)
    seen = b""
    try:
        while b"PIN" not in seen:
            assert select.select([main], [], [], 60)[0], f"no PIN prompt: {seen!r}"
            seen += os.read(main, 1024)
        os.write(main, b"\x03")  # the terminal turns it into SIGINT
        with contextlib.suppress(OSError):  # the terminal closes when the command is done
            while select.select([main], [], [], 60)[0] and (chunk := os.read(main, 1024)):
                seen += chunk
        assert process.wait(timeout=1) == 130, seen
    finally:
        process.kill()  # a command Ctrl-C did not stop does not outlive the test
        os.close(main)
    assert "Error: interrupted" in seen.decode()
    events = run_warm(*db, "--json", "audit", "list", "--action", "portal.login", cwd=tmp_path)
    assert json.loads(events.stdout) == []


def test_the_hour_autumn_repeats_is_told_apart_by_its_zone() -> None:
    """25 October 2026, 02:30 happens twice in Paris; the tables say which (CEST, then CET)."""
    from datetime import UTC, datetime

    from cpms_admin.clock import parse_moment

    assert parse_moment("2026-10-25 02:30 CEST", option="--since") == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    assert parse_moment("2026-10-25 02:30 CET", option="--since") == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("since", ["0001-01-01 00:30 CET", "9999-12-31T23:30:00-01:00"])
def test_a_time_past_the_calendar_is_a_usage_error_not_a_traceback(cli: Cli, since: str) -> None:
    result = cli("--json", "audit", "list", "--since", since)
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout) == {
        "error": f"--since {since!r} is out of the calendar's range",
        "exit_code": 2,
    }
