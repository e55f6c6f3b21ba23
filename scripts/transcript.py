"""Write docs/support-session.md: the README's tour for support agents, run for real.

The commands are read from the code block(s) of the README's "A tour for support agents",
so the session cannot drift from the tour. Each runs with the installed `cpms-admin`, in a
terminal of 100 columns (stdout and stderr as an agent sees them, in order), against a copy
of the demo database that `make demo` builds (data/demo.db and its pepper): the demo stays
as it was. Placeholders become real values of the demo database:

- a NIR (`NIR`, or the README's example number) is the caller's: the first member the tour's
  own `member list --search` finds, written grouped where the README groups it;
- `member close` closes another member (the caller's story goes on);
- `member add` adds a newcomer (`--nir N --last-name L ...`) with a fresh NIR;
- optional parts in [brackets] are left out.

Before the calls, the caller types three wrong PINs on the portal, so that `account status`
and `account unlock` have something to show. `make docs` runs this script.

    .venv/bin/python scripts/transcript.py [--demo-db data/demo.db] [--out FILE]
"""

import argparse
import fcntl
import json
import os
import pty
import re
import shlex
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cpms_admin.french import PARIS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OUT = ROOT / "docs" / "support-session.md"
DEMO_DB = ROOT / "data" / "demo.db"
CLI = Path(sys.executable).parent / "cpms-admin"  # the installed entry point
TOUR = "A tour for support agents"
AGENT = "support.agent"
COLUMNS = 100
WRONG_PIN = "605813"

# A NIR as the README may write it: 13 digits (or 2A/2B) and the key, grouped or not.
NIR_TEXT = re.compile(r"[12][\s.-]?\d\d[\s.-]?\d\d[\s.-]?(?:\d\d|2A|2B)(?:[\s.-]?\d){6}[\s.-]?\d\d")
NIR_PLACEHOLDERS = {"NIR", "N"}
# The newcomer `member add` adds, by option: values for the README's placeholders.
NEWCOMER = {
    "--last-name": "Moreau",
    "--first-name": "Claire",
    "--street": "8 rue des Lilas",
    "--postcode": "69003",
    "--city": "Lyon",
    "--email": "claire.moreau@exemple.fr",
}
NEWCOMER_NIR = "2910469123045"  # 13 digits; its key is computed


@dataclass(frozen=True)
class TourCommand:
    text: str  # as the README writes it, without its comment (continuation lines joined)
    words: tuple[str, ...]  # the shell words, `cpms-admin` left out


def normalise(text: str) -> str:
    return " ".join(text.split())


def without_comment(line: str) -> str:
    """The line up to a shell comment (a `#` after a blank, outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def tour_commands(readme: str) -> list[TourCommand]:
    """The commands of the README's tour section, in order."""
    found = re.search(rf"^## {re.escape(TOUR)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not found:
        raise SystemExit(f"transcript: README.md has no section '## {TOUR}'")
    commands: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", found[1], re.M | re.S):
        for line in block.splitlines():
            text = without_comment(line)
            if not text.strip():
                continue
            if line[:1].isspace() and commands:  # a continuation of the command above
                commands[-1] += "\n" + text
            else:
                commands.append(text)
    tour = []
    for text in commands:
        words = shlex.split(text)
        if words[:1] != ["cpms-admin"]:
            raise SystemExit(f"transcript: cannot run this line of the tour: {text}")
        tour.append(TourCommand(text=text, words=tuple(words[1:])))
    return tour


def nir_with_key(body: str) -> str:
    return f"{body}{97 - int(body.replace('2A', '19').replace('2B', '18')) % 97:02d}"


def grouped(nir: str) -> str:
    return " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:]))


@dataclass(frozen=True)
class Cast:
    """Who the session is about: the caller, a member who leaves, a newcomer."""

    caller: str
    leaver: str
    newcomer: str


def substitute(command: TourCommand, cast: Cast) -> list[str]:
    """The words to run: placeholders and example NIRs replaced, [optional parts] dropped."""
    role = {("member", "close"): cast.leaver, ("member", "add"): cast.newcomer}
    nir = role.get(command.words[:2], cast.caller)
    words: list[str] = []
    optional = False
    for word in command.words:
        if word.startswith("[") or optional:
            optional = not word.endswith("]")
            continue
        if word in NIR_PLACEHOLDERS or NIR_TEXT.fullmatch(word):
            words.append(grouped(nir) if " " in word else nir)
        elif re.fullmatch(r"[A-Z]", word) and words and words[-1] in NEWCOMER:
            words.append(NEWCOMER[words[-1]])
        elif re.fullmatch(r"[A-Z]{1,3}", word) and words[-1:] != ["--country"]:
            raise SystemExit(f"transcript: no value for {word} in: {command.text}")
        else:
            words.append(word)
    return words


@dataclass(frozen=True)
class Run:
    words: list[str]
    output: str
    exit_code: int


# How a command of the session starts: `subprocess.Popen`'s arguments without the program.
Start = Callable[..., "subprocess.Popen[Any]"]


def installed(words: Sequence[str], **popen: Any) -> "subprocess.Popen[Any]":
    """The installed `cpms-admin WORDS`."""
    return subprocess.Popen([CLI, *words], **popen)


class Session:
    """The installed command against a copy of the demo database, in a terminal."""

    def __init__(self, demo_db: Path, work: Path, start: Start = installed) -> None:
        database = work / "demo.db"
        with sqlite3.connect(demo_db) as source, sqlite3.connect(database) as copy:
            source.backup(copy)  # a consistent copy, whatever the WAL holds
        shutil.copy2(demo_db.with_name("pepper"), work / "pepper")  # the pepper beside it
        self.work = work
        self.start = start
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CPMS_") and key not in {"COLUMNS", "LINES"}
        }
        self.env.update(
            CPMS_DATABASE_URL=f"sqlite:///{database}",
            CPMS_AGENT=AGENT,
            CPMS_MAIL_DIR=str(work / "outbox"),
            NO_COLOR="1",  # and any escape code left is removed below
            TERM="xterm",  # not "dumb": rich would then keep to 80 columns
            COLUMNS=str(COLUMNS),
            PYTHONUNBUFFERED="1",
        )

    def json(self, *words: str) -> object:
        process = self.start(
            ["--json", *words], env=self.env, cwd=self.work, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = process.communicate()
        if process.returncode:
            raise SystemExit(f"transcript: cpms-admin {shlex.join(words)}: {stderr}")
        return json.loads(stdout)

    def run(self, words: Sequence[str], stdin: str = "") -> Run:
        """Run in a pseudo-terminal, as an agent would: what it prints, and its exit code."""
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
        process = self.start(
            list(words), stdin=subprocess.PIPE, stdout=follower, stderr=follower,
            env=self.env, cwd=self.work,
        )  # fmt: skip
        os.close(follower)
        assert process.stdin is not None
        process.stdin.write(stdin.encode())
        process.stdin.close()
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # should there be any escape code
        return Run(list(words), text.rstrip(), process.wait(timeout=300))


def cast_of(session: Session, tour: list[TourCommand]) -> Cast:
    search = next(
        (c.words for c in tour if c.words[:2] == ("member", "list") and "--search" in c.words),
        None,
    )
    found = []
    if search:
        found = session.json("member", "list", "--search", search[search.index("--search") + 1])
    members = session.json("member", "list", "--status", "active", "--limit", "20")
    assert isinstance(members, list) and isinstance(found, list)
    caller = (found or members)[0]["nir"]
    leaver = next(m["nir"] for m in members if m["nir"] != caller)
    return Cast(caller=caller, leaver=leaver, newcomer=nir_with_key(NEWCOMER_NIR))


def console(run: Run, stdin: str = "") -> list[str]:
    shown = f"$ cpms-admin {shlex.join(run.words)}"
    if stdin:
        shown = f"$ echo {stdin.strip()} | cpms-admin {shlex.join(run.words)}"
    lines = ["```console", shown]
    if run.output:
        lines.append(run.output)
    if run.exit_code:
        lines.append(f"[exit {run.exit_code}]")
    return [*lines, "```", ""]


def name_of(session: Session, nir: str) -> str:
    member = session.json("member", "show", nir)
    assert isinstance(member, dict)
    return f"{member['first_name']} {member['last_name'].upper()}"


def write(demo_db: Path, out: Path, start: Start = installed) -> None:
    """The session, its commands started by `start` (the tests fork them warm)."""
    tour = tour_commands(README.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="cpms-transcript-") as folder:
        session = Session(demo_db, Path(folder), start)
        status = session.run(["db", "status"])
        if status.exit_code:
            raise SystemExit(f"transcript: {demo_db} is not ready ({status.output}): make demo")
        cast = cast_of(session, tour)
        caller = name_of(session, cast.caller)
        leaver = name_of(session, cast.leaver)
        day = datetime.now(PARIS)
        lines = [
            "# A support session",
            "",
            "<!-- Generated by scripts/transcript.py: do not edit. "
            "Regenerate with `make docs`. -->",
            "",
            f"Run on {day.day} {day:%B %Y} (Paris). The README's [tour for support agents]"
            f"(../README.md#{TOUR.lower().replace(' ', '-')}), command by command, run for real "
            "with the installed `cpms-admin` in a terminal of "
            f"{COLUMNS} columns, as agent `{AGENT}`, against a copy of the demo database that "
            "`make demo` builds (`data/demo.db`; the demo itself is left as it was). Where "
            "the tour has a placeholder, the session has a member of the demo:",
            "",
            f"- the caller, {caller} (`{grouped(cast.caller)}`), is the first member the "
            "tour's `member list --search` finds; every `NIR` and the example NIR are theirs;",
            f"- `member close` closes another member, {leaver} (`{grouped(cast.leaver)}`);",
            f"- `member add` adds {NEWCOMER['--first-name']} "
            f"{NEWCOMER['--last-name'].upper()} (`{grouped(cast.newcomer)}`); optional "
            "parts in [brackets] are left out.",
            "",
            "The members, NIRs and letters are the demo's, the same at every run; times are "
            "those of the run. Regenerate with `make docs`.",
            "",
            "## Before the call",
            "",
            f"{caller} tried to log in on the portal three times with a wrong PIN:",
            "",
        ]
        for _ in range(3):
            attempt = session.run(["portal", "login", cast.caller], stdin=f"{WRONG_PIN}\n")
            lines += console(attempt, stdin=WRONG_PIN)
        lines += ["## The call", ""]
        for number, command in enumerate(tour, 1):
            run = session.run(substitute(command, cast))
            lines += [
                f"### {number}. {' '.join(command.words[:2])}",
                "",
                f"Tour: `{normalise(command.text)}`",
                "",
                *console(run),
            ]
            if run.exit_code:
                print(f"transcript: exit {run.exit_code} from {run.words}:\n{run.output}")
                raise SystemExit(1)
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-db", type=Path, default=DEMO_DB, help="the demo's database")
    parser.add_argument("--out", type=Path, default=OUT, help="the transcript to write")
    args = parser.parse_args()
    if not args.demo_db.exists():
        raise SystemExit(f"transcript: no {args.demo_db}: run make demo first")
    write(args.demo_db.resolve(), args.out.resolve())


if __name__ == "__main__":
    main()
