"""The attacks of test_attacks.py run as an outsider runs them: loops and crowds of real
`cpms-admin` processes (forked warm: tests/warm_cli.py), on every engine; and `mail send`
killed with SIGKILL between making a code and marking its e-mail sent."""

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from cpms_admin.models import OutgoingMail, SecurityCode, pk
from tests.audit_helpers import audit_of, run_event, run_id
from tests.cred_helpers import PIN, account_of, give_pin, mailed_codes, outbox
from tests.factories import make_member, make_nir
from tests.harness import Cli
from tests.process_helpers import cli_popen, run_with_settings_of
from tests.slow_smtp import LIFETIME, Talk, drip_greeting, slow_server

pytestmark = pytest.mark.slow
# One-second cool-downs and no daily limit: only the budget of guesses stands in the way.
PATIENT = {
    "CPMS_LOCKOUT_COOLDOWN_SECONDS": "1",
    "CPMS_LOCKOUT_COOLDOWN_CAP_SECONDS": "1",
    "CPMS_CODE_REQUESTS_PER_DAY": "100",
}


def guess_code(cli: Cli, nir: str, code: str, **env: str) -> dict[str, Any]:
    """One wrong code, typed as an attacker who solves every CAPTCHA would."""
    done = run_with_settings_of(
        cli,
        "--json",
        "portal",
        "set-pin",
        nir,
        "--with",
        "code",
        "--captcha-ok",
        stdin=f"{code}\n739264\n739264\n",
        **{**PATIENT, **env},
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_a_loop_of_requests_and_wrong_codes_is_stopped_by_the_hard_lock(
    cli: Cli, session: Session, settings: Any
) -> None:
    member = make_member(session, welcome=False)
    give_pin(session, settings, member)
    checked, answers = 0, []
    for _ in range(30):
        if (
            run_with_settings_of(cli, "portal", "request-code", member.nir, **PATIENT).returncode
            != 0
        ):
            break
        code = mailed_codes(settings)[-1]
        for _ in range(5):
            answer = guess_code(cli, member.nir, f"{(int(code) + 1) % 1_000_000:06d}")
            answers.append(answer["reason"])
            if answer["reason"] in ("wrong_code", "dead_code"):
                checked += 1
            if answer["reason"] == "locked":
                break
            time.sleep(answer["retry_after_seconds"] or 0)  # the cool-down, 1 s
        if answers[-1] == "locked":
            break
    assert checked == 10, answers
    assert answers[-1] == "locked"
    session.rollback()
    assert account_of(session, member).hard_locked_at is not None
    # The member's right PIN is refused too, until an agent steps in (checked in-process,
    # on the system clock as the processes were).
    now = Cli(cli.settings)
    login = now("--json", "portal", "login", member.nir, "--captcha-ok", input=f"{PIN}\n")
    assert json.loads(login.stdout)["reason"] == "locked"
    status = now("account", "status", member.nir)
    assert "locked" in status.stdout.lower()


def test_a_crowd_of_processes_guessing_at_once_gets_exactly_the_budget(
    cli: Cli, session: Session, settings: Any
) -> None:
    """No cool-down before the hard lock (a cool-down would take turns for the crowd, and
    each refusal would cost a process): every guess races for the last of the budget."""
    member = make_member(session, welcome=False)
    assert run_with_settings_of(cli, "portal", "request-code", member.nir).returncode == 0
    (code,) = mailed_codes(settings)

    budget, crowd = 6, 4  # more guessers than cores, each racing for the last guesses
    lock_at_budget = {
        "CPMS_LOCKOUT_MAX_FAILURES": str(budget),
        "CPMS_LOCKOUT_HARD_AFTER": str(budget),
    }

    def attacker(n: int) -> list[str]:
        seen = []
        for _ in range(budget):
            wrong = f"{(int(code) + n + 1) % 1_000_000:06d}"
            answer = guess_code(cli, member.nir, wrong, **lock_at_budget)
            seen.append(answer["reason"])
            if answer["reason"] == "locked":
                break
            assert not answer["retry_after_seconds"], answer
        return seen

    with ThreadPoolExecutor(crowd) as pool:
        seen = [reason for answers in pool.map(attacker, range(crowd)) for reason in answers]
    checked = [reason for reason in seen if reason in ("wrong_code", "dead_code")]
    assert len(checked) == budget, seen
    session.rollback()
    account = account_of(session, member)
    assert (account.failed_attempts, account.hard_locked_at is not None) == (budget, True)


def test_a_loop_of_requests_sends_three_codes_a_day(cli: Cli, session: Session) -> None:
    member = make_member(session, welcome=False)
    runs = [run_with_settings_of(cli, "portal", "request-code", member.nir) for _ in range(5)]
    assert {(run.returncode, run.stdout, run.stderr) for run in runs} == {(0, runs[0].stdout, "")}
    assert len(outbox(cli.settings)) == 3


def test_a_member_and_a_stranger_get_the_same_output_from_the_real_command(
    cli: Cli, session: Session
) -> None:
    with_email = make_member(session, welcome=False)
    without = make_member(session, welcome=False, email=None)
    outputs = {
        (run.returncode, run.stdout, run.stderr)
        for run in (run_with_settings_of(cli, "portal", "request-code", nir)
                    for nir in (with_email.nir, without.nir, make_nir()))
    }  # fmt: skip
    assert len(outputs) == 1, outputs


def answered_before_mail(cli: Cli, *args: str, stdin: str = "") -> tuple[str, str]:
    """Run the command against a mail server that answers only once the test has
    read the command's stdout to its end (as `json.loads(stdout)` reads it): the answer and
    stderr. Fails if stdout ended only after the SMTP session."""
    greeted, released = threading.Event(), threading.Event()

    def held_greeting(talk: Talk) -> None:
        released.wait(LIFETIME - 2)
        greeted.set()
        talk.say("421 slow.test closing")
        talk.wait_for_goodbye()

    with slow_server(held_greeting) as (port, _):
        run = cli_popen(
            ["--json", *args],
            env={
                **os.environ,
                **cli.env(),
                "CPMS_SMTP_URL": f"smtp://127.0.0.1:{port}",
                # Longer than the server holds its greeting: a command that waits for the
                # mail server before it answers cannot answer first by timing out.
                "CPMS_SMTP_TIMEOUT_SECONDS": str(int(LIFETIME) + 5),
                "CPMS_SMTP_DEADLINE_SECONDS": str(int(LIFETIME) + 10),
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert run.stdin is not None and run.stdout is not None and run.stderr is not None
        run.stdin.write(stdin)
        run.stdin.close()
        answer = run.stdout.read()
        ended_first = run.poll() is None and not greeted.is_set()  # still at the SMTP server
        released.set()
        errors = run.stderr.read()
        assert run.wait(timeout=60) == 0, (answer, errors)
    assert ended_first, "stdout ended only after the SMTP session"
    return answer, errors


def test_the_answer_ends_before_the_e_mail_is_sent(cli: Cli, session: Session) -> None:
    """Only a member with an address gets an e-mail: a portal reading the command's stdout to
    its end waited for the SMTP session (seconds) for them alone, and could tell them from a
    stranger. The answer's stream ends with the answer; the e-mail goes after."""
    member = make_member(session, welcome=False)
    answer, warning = answered_before_mail(cli, "portal", "request-code", member.nir)
    assert json.loads(answer)["ok"] is True
    assert "Warning: " in warning  # the e-mail was tried after the answer, and failed


def test_set_pin_answers_before_the_pin_changed_notice_is_sent(cli: Cli, session: Session) -> None:
    """The PIN is saved when the answer is given: a slow mail server held the member's page
    for up to the SMTP deadline (20 s) while the notice went."""
    member = make_member(session, welcome=False, email="jean@example.fr")
    issued = run_with_settings_of(
        cli, "code", "issue", member.nir, "--reason", "test"
    )  # on the real clock
    assert issued.returncode == 0, issued.stderr
    (code,) = mailed_codes(cli.settings)
    answer, _ = answered_before_mail(
        cli, "portal", "set-pin", member.nir, "--with", "code", stdin=f"{code}\n284917\n284917\n"
    )
    assert json.loads(answer)["ok"] is True


def sent_events(cli: Cli, nir: str) -> list[dict[str, Any]]:
    return [e["details"] for e in audit_of(cli, nir) if e["action"] == "mail.send.member"]


@pytest.mark.parametrize("failpoint", ["mail.before_send", "mail.after_send"])
def test_mail_send_killed_between_code_and_mark_leaves_one_working_code(
    cli: Cli, session: Session, failpoint: str
) -> None:
    """Killed after the code was stored (its e-mail gone or not), the next run sends the
    e-mail again instead of cancelling it: the member ends with one code, and it works. (Only
    the killed run needs a process of its own; the agent's campaign, the next run and the
    member run in-process, on the system clock as the killed run did.)"""
    member = make_member(session, welcome=False)
    now = Cli(cli.settings)
    queued = now("code", "campaign", "--no-pin", "--channel", "email", "--reason", "m")
    assert queued.exit_code == 0, queued.output
    killed = run_with_settings_of(cli, "mail", "send", CPMS_FAILPOINT=failpoint)
    assert killed.returncode == -signal.SIGKILL
    assert sent_events(cli, member.nir) == []  # not marked sent: not in the member's story
    again = now("--json", "mail", "send")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["sent"] == 1
    assert sent_events(cli, member.nir) == [
        {"change": "sent", "run": run_id(run_event(cli, "mail.send"))}
    ]
    session.rollback()
    (mail,) = session.exec(select(OutgoingMail)).all()
    assert mail.status == "sent"
    live = session.exec(
        select(SecurityCode).where(
            col(SecurityCode.member_id) == pk(member), col(SecurityCode.status) == "pending"
        )
    ).all()
    assert [row.id for row in live] == [mail.code_id]
    last = mailed_codes(cli.settings)[-1]
    done = now("portal", "set-pin", member.nir, input=f"{last}\n739264\n739264\n")
    assert done.exit_code == 0, done.output


def test_mail_send_killed_after_sending_sends_nothing_once_the_member_used_the_code(
    cli: Cli, session: Session
) -> None:
    """The killed run's e-mail left, and the member set a PIN with its code: that proves it
    arrived. The next run sent a new code anyway, unasked, to a member who had just logged in."""
    member = make_member(session, welcome=False)
    now = Cli(cli.settings)
    assert now("code", "campaign", "--no-pin", "--channel", "email", "--reason", "m").exit_code == 0
    killed = run_with_settings_of(cli, "mail", "send", CPMS_FAILPOINT="mail.after_send")
    assert killed.returncode == -signal.SIGKILL
    (code,) = mailed_codes(cli.settings)
    assert now("portal", "set-pin", member.nir, input=f"{code}\n739264\n739264\n").exit_code == 0
    again = now("--json", "mail", "send")
    assert (json.loads(again.stdout)["sent"], json.loads(again.stdout)["cancelled"]) == (0, 1)
    assert mailed_codes(cli.settings) == [code]  # nothing more e-mailed
    session.rollback()
    (mail,) = session.exec(select(OutgoingMail)).all()
    assert (
        mail.last_error
        == "sent by a run stopped before it could record it: the member used its code"
    )
    session.rollback()
    statuses = session.exec(select(SecurityCode.status).where(SecurityCode.member_id == pk(member)))
    assert list(statuses) == ["used"]


def test_mail_send_killed_then_failing_still_mails_the_member_later(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Killed before sending, then a run whose send fails: the killed run's code must not stay
    live and pass for a code on its way, or the third run would cancel the e-mail and the
    member would get nothing."""
    member = make_member(session, welcome=False)
    now = Cli(cli.settings)
    assert now("code", "campaign", "--no-pin", "--channel", "email", "--reason", "m").exit_code == 0
    killed = run_with_settings_of(cli, "mail", "send", CPMS_FAILPOINT="mail.before_send")
    assert killed.returncode == -signal.SIGKILL
    (tmp_path / "a-file").write_text("")
    down = now.with_settings(mail_dir=str(tmp_path / "a-file" / "outbox"))
    failed = down("--json", "mail", "send")
    assert json.loads(failed.stdout)["retry"] == 1, failed.output
    again = now("--json", "mail", "send")
    assert json.loads(again.stdout)["sent"] == 1, again.output
    session.rollback()
    live = session.exec(
        select(SecurityCode).where(
            col(SecurityCode.member_id) == pk(member), col(SecurityCode.status) == "pending"
        )
    ).all()
    (mail,) = session.exec(select(OutgoingMail)).all()
    assert [row.id for row in live] == [mail.code_id]  # one code, the one mailed
    last = mailed_codes(cli.settings)[-1]
    done = now("portal", "set-pin", member.nir, input=f"{last}\n739264\n739264\n")
    assert done.exit_code == 0, done.output


def test_mail_send_gives_up_on_a_dripping_server_at_the_deadline(
    cli: Cli, session: Session
) -> None:
    make_member(session, welcome=False)
    run_with_settings_of(cli, "code", "campaign", "--no-pin", "--channel", "email", "--reason", "m")
    with slow_server(drip_greeting) as (port, _):
        started = time.monotonic()
        run = run_with_settings_of(
            cli,
            "mail",
            "send",
            CPMS_SMTP_URL=f"smtp://127.0.0.1:{port}",
            CPMS_SMTP_DEADLINE_SECONDS="2",
        )
        elapsed = time.monotonic() - started
    assert run.returncode == 1 and elapsed < 10, (elapsed, run.stderr)
    assert run.stderr.startswith("Error: mail send stopped: an SMTP session ran past its")
    assert "Traceback" not in run.stderr
