"""A member who sends their code again after it set their PIN (a second tab, the Back button)
is told the code was used, and it costs no attempt. Only the holder of that very code gets
that answer: anyone else's guess is a wrong code, counted, with the same words as before."""

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin.credentials import code_hash
from cpms_admin.models import Member
from tests.cred_helpers import NEW_PIN, PIN, mailed_codes
from tests.factories import make_member, make_nir
from tests.harness import Cli, FakeClock
from tests.process_helpers import cli_popen, start_held, wait_until, waiting_for_a_lock

USED = (
    "Ce code de sécurité a déjà été utilisé. Connectez-vous avec le mot de passe que vous avez "
    "créé, ou demandez un nouveau code (« Obtenir mon code de sécurité »).\n"
)


@pytest.fixture
def member(session: Session) -> Member:
    return make_member(session, welcome=False)


def set_pin(cli: Cli, nir: str, code: str, *options: str) -> Any:
    return cli("portal", "set-pin", nir, *options, input=f"{code}\n{PIN}\n{PIN}\n")


def failures(cli: Cli, nir: str) -> int:
    return int(json.loads(cli("--json", "account", "status", nir).stdout)["failed_attempts"])


@pytest.mark.parametrize("using", [[], ["--with", "code"]], ids=["auto", "code"])
def test_a_used_code_sent_again_says_so_and_costs_nothing(
    cli: Cli, member: Member, using: list[str]
) -> None:
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert set_pin(cli, member.nir, code, *using).exit_code == 0
    for _ in range(4):  # more than the 3 wrong tries before a wait
        again = set_pin(cli, member.nir, code, *using)
        assert (again.exit_code, again.stdout, again.stderr) == (
            1,
            "",
            USED + "  (3 attempts left)\n",
        )
    replay = cli("--json", "portal", "set-pin", member.nir, *using, input=f"{code}\n{PIN}\n{PIN}\n")
    answer = json.loads(replay.stdout)
    assert answer == {
        "ok": False,
        "reason": "code_used",
        "message": USED.rstrip("\n"),
        "remaining_attempts": 3,
        "retry_after_seconds": None,
        "captcha_required": False,
    }
    assert failures(cli, member.nir) == 0
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("meanwhile", "reason"),
    [("the other tab", "code_used"), ("a new code", "dead_code")],
)
def test_a_code_that_dies_while_the_pin_is_hashed_is_answered_and_audited(
    cli: Cli, clock: FakeClock, member: Member, tmp_path: Path, meanwhile: str, reason: str
) -> None:
    """Two tabs send the same code at once: the first saves its PIN; the second, held between
    its check and its save, is told the code was used (not that it was wrong), and both
    attempts are in the audit. A code replaced meanwhile is a dead code, audited too."""
    clock.now = datetime.now(UTC)  # the held run is a real process, on the real clock
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    held_here = tmp_path / "held"
    typed = tmp_path / "typed"
    typed.write_text(f"{code}\n{NEW_PIN}\n{NEW_PIN}\n")
    with typed.open() as stdin:
        held = start_held(
            ["--json", "portal", "set-pin", member.nir, "--with", "code"],
            env={**os.environ, **cli.env()},
            point="portal.before_save_pin",
            flag=held_here,
            stdin=stdin,
        )
    try:
        if meanwhile == "the other tab":
            assert set_pin(cli, member.nir, code, "--with", "code").exit_code == 0
        else:
            assert cli("code", "issue", member.nir, "--reason", "y").exit_code == 0
    finally:
        held_here.unlink(missing_ok=True)
        out, err = held.communicate(timeout=60)
    assert (held.returncode, json.loads(out)["reason"]) == (1, reason), err
    events = json.loads(cli("--json", "audit", "list", "--nir", member.nir).stdout)
    outcomes = [e["outcome"] for e in events if e["action"] == "portal.set_pin"]
    assert sorted(outcomes) == sorted([reason, "ok"] if reason == "code_used" else [reason])
    assert failures(cli, member.nir) == 0


def test_two_tabs_sending_one_code_at_once_never_deadlock(
    cli: Cli, clock: FakeClock, member: Member, engine: Engine, tmp_path: Path
) -> None:
    """PostgreSQL: the first tab, held once it has used the code, holds the member's account;
    the second tab's check waits for it, then is told the code was used. Taken in the other
    order (the code's row first), the two locks deadlocked and a tab got exit 5."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the second tab waits for the first")
    clock.now = datetime.now(UTC)  # the runs are real processes, on the real clock
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    typed = tmp_path / "typed"
    typed.write_text(f"{code}\n{NEW_PIN}\n{NEW_PIN}\n")
    command = ["--json", "portal", "set-pin", member.nir, "--with", "code"]
    env = {**os.environ, **cli.env()}
    held_here = tmp_path / "held"
    with typed.open() as stdin:
        held = start_held(command, env=env, point="portal.code_consumed", flag=held_here,
                          stdin=stdin)  # fmt: skip
    try:
        with typed.open() as stdin:
            second = cli_popen(command, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip
        with Session(engine) as looking:
            wait_until(lambda: waiting_for_a_lock(looking), what="the second tab to wait")
    finally:
        held_here.unlink(missing_ok=True)
        out, err = held.communicate(timeout=60)
    assert (held.returncode, json.loads(out)["reason"]) == (0, "ok"), err
    answer = json.loads(second.communicate(timeout=60)[0])
    assert (second.returncode, answer.get("reason")) == (1, "code_used"), answer


def test_anyone_else_gets_a_wrong_code_counted_as_before(
    cli: Cli, clock: FakeClock, member: Member
) -> None:
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert set_pin(cli, member.nir, code).exit_code == 0
    other = f"{(int(code) + 1) % 1_000_000:06d}"
    wrong = cli("--json", "portal", "set-pin", member.nir, "--with", "code",
                input=f"{other}\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
    assert json.loads(wrong.stdout)["reason"] == "dead_code"
    assert failures(cli, member.nir) == 1
    # The same guess at a stranger's NIR, and at a member who never had a code: same words.
    stranger = cli("portal", "set-pin", make_nir(), "--with", "code",
                   input=f"{code}\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
    assert stranger.stderr.startswith("Code de sécurité erroné ou expiré.")
    # A cool-down refuses the used code too, before looking at it.
    for _ in range(2):
        cli("portal", "set-pin", member.nir, "--with", "code", input=f"{other}\n{PIN}\n{PIN}\n")
    cooling = set_pin(cli, member.nir, code, "--captcha-ok")
    assert cooling.stderr.startswith("Par mesure de sécurité, vous devez patienter")
    # Past its validity, a used code is a dead code like any other, and counted.
    clock.advance(minutes=11)
    late = cli("--json", "portal", "set-pin", member.nir, "--with", "code", "--captcha-ok",
               input=f"{code}\n{PIN}\n{PIN}\n")  # fmt: skip
    assert json.loads(late.stdout)["reason"] == "dead_code"
    assert failures(cli, member.nir) == 4


def test_a_code_check_costs_two_compares_whoever_asks(
    cli: Cli, session: Session, member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Constant work: the live code (or a dummy) and the used code (or a dummy), for a member
    with codes, a member without, and an unknown NIR alike."""
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert set_pin(cli, member.nir, code).exit_code == 0
    assert cli("code", "issue", member.nir, "--reason", "x").exit_code == 0  # a live one too
    bare = make_member(session, welcome=False)
    calls: list[str] = []
    real = code_hash.verify_code

    def counted(**kwargs: Any) -> bool:
        calls.append(kwargs["stored"])
        return real(**kwargs)

    monkeypatch.setattr("cpms_admin.credentials.codes.verify_code", counted)
    for nir in (member.nir, bare.nir, make_nir()):
        calls.clear()
        cli("portal", "set-pin", nir, "--with", "code", "--captcha-ok",
            input=f"000000\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
        assert len(calls) == 2, nir
