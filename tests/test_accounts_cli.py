"""The agent commands (account, pin, code) and the portal group through the CLI: exit codes,
messages, JSON, and e-mail through a real SMTP server on loopback."""

import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlmodel import Session, col, update

from cpms_admin.french import agent_time
from cpms_admin.letters.queue import queue_letter
from cpms_admin.members.nir import format_nir
from cpms_admin.models import Letter, Member, SecurityCode, pk
from cpms_admin.settings import Settings
from tests.cred_helpers import (
    NEW_PIN,
    PIN,
    account_of,
    codes_of,
    give_pin,
    mailed_codes,
    outbox,
    text_of,
)
from tests.factories import make_member, make_nir, snapshot
from tests.harness import Cli, FakeClock
from tests.mail_helpers import free_port, smtp_server

LOGIN_KEYS = {"ok", "reason", "remaining_attempts", "retry_after_seconds", "captcha_required"}


@pytest.fixture
def member(session: Session, settings: Settings) -> Member:
    member = make_member(session, welcome=False)
    give_pin(session, settings, member)
    return member


def lock_out(cli: Cli, clock: FakeClock, nir: str, times: int = 10) -> None:
    for _ in range(times):
        clock.advance(hours=2)
        cli("portal", "login", nir, "--captcha-ok", input="605813\n")


def test_portal_login_json_and_exit_codes(cli: Cli, member: Member) -> None:
    ok = cli("--json", "portal", "login", member.nir, input=f"{PIN}\n")
    assert ok.exit_code == 0
    assert set(json.loads(ok.stdout)) == LOGIN_KEYS | {"message"}
    wrong = cli("--json", "portal", "login", member.nir, input="605813\n")
    assert (wrong.exit_code, json.loads(wrong.stdout)["reason"]) == (1, "wrong_pin")
    unknown = cli("--json", "portal", "login", make_nir(), input="605813\n")
    assert (unknown.exit_code, json.loads(unknown.stdout)["reason"]) == (1, "unknown_member")
    human = cli("portal", "login", member.nir, input="605813\n")
    assert human.stderr == (
        "Mot de passe erroné. Attention, il vous reste 1 tentative avant de devoir patienter "
        "1 minute.\n  (1 attempt left)\n"
    )
    assert PIN not in ok.output + wrong.output + human.output


def test_each_wrong_pin_says_what_comes_next(cli: Cli, clock: FakeClock, member: Member) -> None:
    """The count left always names what it counts down to: the first wait, then the block;
    a count never goes up from one message to the next without saying why."""

    def wrong() -> str:
        result = cli("portal", "login", member.nir, "--captcha-ok", input="605813\n")
        assert (result.exit_code, result.stdout) == (1, "")
        return str(result.stderr)

    assert [wrong(), wrong(), wrong(), wrong()] == [
        "Mot de passe erroné. Attention, il vous reste 2 tentatives avant de devoir patienter "
        "1 minute.\n  (2 attempts left)\n",
        "Mot de passe erroné. Attention, il vous reste 1 tentative avant de devoir patienter "
        "1 minute.\n  (1 attempt left)\n",
        "Mot de passe erroné. Par mesure de sécurité, vous devez patienter 1 minute avant une "
        "nouvelle tentative. Attention, il vous reste 7 tentatives avant le blocage de votre "
        "accès.\n  (7 attempts left; retry after 60 s; CAPTCHA required)\n",
        "Par mesure de sécurité, vous devez patienter 1 minute avant une nouvelle tentative.\n"
        "  (7 attempts left; retry after 60 s; CAPTCHA required)\n",
    ]
    clock.advance(seconds=60)
    assert wrong() == (
        "Mot de passe erroné. Par mesure de sécurité, vous devez patienter 2 minutes avant une "
        "nouvelle tentative. Attention, il vous reste 6 tentatives avant le blocage de votre "
        "accès.\n  (6 attempts left; retry after 120 s; CAPTCHA required)\n"
    )
    for _ in range(6):  # the 10th failure
        clock.advance(hours=2)
        last = wrong()
    assert last == (
        "Mot de passe erroné. Votre accès est bloqué à la suite de trop nombreuses tentatives. "
        "Pour le débloquer, contactez le service clients.\n  (0 attempts left; CAPTCHA "
        "required)\n"
    )


def test_bad_input_changes_nothing(cli: Cli, session: Session, member: Member) -> None:
    no_email = make_member(session, welcome=False, email=None)
    before = snapshot(session)
    refusals = [
        (cli("portal", "login", member.nir, input="48291\n"), 2, "6 digits"),
        (cli("portal", "login", member.nir, input="４８２９１５\n"), 2, "6 digits"),
        (cli("portal", "login", member.nir, input=""), 2, "expected 1 line on stdin (PIN), got 0"),
        (cli("portal", "login", "185057800608492", input=f"{PIN}\n"), 2, "invalid NIR"),
        (cli("portal", "set-pin", member.nir, input=f"{PIN}\n{NEW_PIN}\n"), 2,
         "expected 3 lines on stdin"),
        (cli("portal", "set-pin", member.nir, input=f"{PIN}\n73926\n73926\n"), 2, "6 digits"),
        (cli("portal", "set-pin", member.nir, input=f"{PIN}\n{NEW_PIN}\n739265\n"), 2,
         "ne sont pas identiques"),
        (cli("portal", "set-pin", member.nir, input=f"{PIN}\n111111\n111111\n"), 1,
         "trop facile à deviner"),
        (cli("portal", "accept-terms", member.nir, "--version", "0", input=f"{PIN}\n"), 2,
             "current Terms"),
        (cli("account", "unlock", member.nir, "--reason", " "), 2, "a reason is required"),
        (cli("account", "unlock", make_nir(), "--reason", "x"), 3, "no member with NIR"),
        (cli("account", "status", make_nir()), 3, "no member with NIR"),
        (cli("pin", "reset", member.nir), 2, "Missing option '--reason'"),
        (cli("pin", "reset", member.nir, "--reason", ""), 2, "a reason is required"),
        (cli("pin", "reset", make_nir(), "--reason", "x"), 3, "no member with NIR"),
        (cli("pin", "reset", member.nir, "--channel", "sms", "--reason", "x"), 2, "sms"),
        (cli("code", "issue", no_email.nir, "--channel", "email"), 1,
         f"member {format_nir(no_email.nir)} has no e-mail address"),
        (cli("code", "issue", make_nir()), 3, "no member with NIR"),
    ]  # fmt: skip
    for result, code, message in refusals:
        assert (result.exit_code, message in result.output) == (code, True), result.output
        assert "Traceback" not in result.output
    assert snapshot(session) == before
    assert outbox(cli.settings) == []


def test_a_cool_down_is_shown_while_it_runs_and_not_after(
    cli: Cli, clock: FakeClock, member: Member
) -> None:
    for _ in range(3):  # the third wrong PIN starts a cool-down of 60 s
        cli("portal", "login", member.nir, input="605813\n")
    for command in (("account", "status"), ("member", "show")):
        assert "cool-down until 2026-11-23 10:01 CET" in cli(*command, member.nir).stdout
    clock.advance(seconds=61)
    for command in (("account", "status"), ("member", "show")):
        assert "cool-down" not in cli(*command, member.nir).stdout.split("Diagnosis")[0]


def test_a_campaign_email_waiting_for_mail_send_is_in_flight(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Support must not send a second code (which `mail send` would then cancel) to a member
    whose campaign e-mail is queued."""
    member = make_member(session, welcome=False, email="bob@example.org")
    listed = tmp_path / "nirs.txt"
    listed.write_text(member.nir + "\n")
    assert cli("code", "campaign", "--from-file", str(listed), "--reason", "x").exit_code == 0
    view = json.loads(cli("--json", "account", "status", member.nir).stdout)
    assert [m["purpose"] for m in view["queued_emails"]] == ["first_login"]
    human = cli("account", "status", member.nir).stdout
    assert "code e-mail (queued 2026-11-23 10:00 CET) waits for the next `mail send`" in human
    assert "no code on its way" not in human


def test_locked_member_is_diagnosed_then_unlocked(
    cli: Cli, clock: FakeClock, member: Member
) -> None:
    lock_out(cli, clock, member.nir)
    status = cli("account", "status", member.nir)
    assert status.exit_code == 0
    assert "Locked after 10 failed attempts on" in status.stdout
    assert status.stdout.splitlines()[1] == (  # the tenth wrong PIN: 20 hours after 9:00 UTC
        "  PIN set; 10 failed attempts; CAPTCHA required; hard lock since 2026-11-24 06:00 CET"
    )
    assert f'Fix: cpms-admin account unlock {member.nir} --reason "..."' in status.stdout
    view = json.loads(cli("--json", "account", "status", member.nir).stdout)
    assert (view["state"], view["failed_attempts"], view["captcha_required"]) == (
        "locked",
        10,
        True,
    )
    assert view["fix"].startswith("cpms-admin account unlock")
    unlocked = cli("account", "unlock", member.nir, "--reason", "identity checked by phone")
    assert (unlocked.exit_code, "Unlocked") == (0, unlocked.stdout[:8])
    again = cli("--json", "account", "unlock", member.nir, "--reason", "twice")
    assert (again.exit_code, json.loads(again.stdout)["changed"]) == (0, False)
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    audit = json.loads(cli("--json", "audit", "list", "--action", "account.unlock").stdout)
    assert [(e["label"], e["reason"], e["outcome"]) for e in audit] == [
        ("agent.test", "twice", "noop"),
        ("agent.test", "identity checked by phone", "ok"),
    ]
    assert cli("audit", "list", "--action", "account.unlock").stderr == ""


def test_a_code_asked_for_before_the_hard_lock_is_said_to_open_nothing(
    cli: Cli, clock: FakeClock, session: Session, settings: Settings, member: Member
) -> None:
    """The portal refuses a code asked for before the hard lock, and one an agent sends since
    lets the member in: the diagnosis tells the two apart, for a code by e-mail or by post,
    and tells of the one that opens the lock first."""
    strict = cli.with_settings(lockout_max_failures=3, lockout_hard_after=3)
    assert strict("portal", "request-code", member.nir).exit_code == 0
    asked = mailed_codes(settings)[-1]
    by_post = make_member(session, welcome=False, email=None)
    give_pin(session, settings, by_post)
    assert strict("code", "issue", by_post.nir, "--reason", "x").exit_code == 0  # a letter
    clock.advance(minutes=1)
    for nir in (member.nir, by_post.nir):
        for _ in range(3):
            strict("portal", "login", nir, "--captcha-ok", input="605813\n")

    def in_flight(nir: str) -> str:
        view = json.loads(strict("--json", "account", "status", nir).stdout)
        assert view["state"] == "locked"
        return next(line for line in view["diagnosis"] if line.startswith("In flight"))

    dead = "it opens nothing while the lock holds (only a code an agent sends since does)."
    assert in_flight(member.nir).endswith(
        f"sent by e-mail is valid until 2026-11-23 10:10 CET; {dead}"
    )
    assert in_flight(by_post.nir) == (
        f"In flight: letter #1 (security_code) with a code waits for the next print run; {dead}"
    )
    # A letter an agent asks for since the lock is the one to tell of, not the dead code.
    assert strict("code", "issue", member.nir, "--channel", "post", "--reason", "x").exit_code == 0
    assert in_flight(member.nir) == (
        "In flight: letter #2 (security_code) with a code waits for the next print run."
    )
    refused = strict("--json", "portal", "set-pin", "--with", "code", "--captcha-ok", member.nir,
                     input=f"{asked}\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
    assert (refused.exit_code, json.loads(refused.stdout)["reason"]) == (1, "locked")
    assert strict("code", "issue", member.nir, "--reason", "called").exit_code == 0
    assert in_flight(member.nir).endswith("setting a PIN with it lets the member log in.")
    sent = mailed_codes(settings)[-1]
    taken = strict("portal", "set-pin", "--with", "code", "--captcha-ok", member.nir,
                   input=f"{sent}\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
    assert taken.exit_code == 0, taken.output


def test_an_action_no_event_has_is_named_with_the_closest_known_ones(
    cli: Cli, member: Member
) -> None:
    """A typo in --action lists nothing, as before, and says why on stderr."""
    assert cli("account", "unlock", member.nir, "--reason", "called").exit_code == 0
    typo = cli("--json", "audit", "list", "--action", "acount.unlock")
    assert (typo.exit_code, json.loads(typo.stdout)) == (0, [])
    assert typo.stderr == (
        "Warning: no event was ever recorded with the action 'acount.unlock'; "
        "did you mean account.unlock?\n"
    )
    # An action of the vocabulary that no event has yet is named too (docs/audit.md lists them).
    unwritten = cli("audit", "list", "--action", "pin.rest")
    assert unwritten.stderr == (
        "Warning: no event was ever recorded with the action 'pin.rest'; did you mean pin.reset?\n"
    )
    shouted = cli("audit", "list", "--action", "ACCOUNT.UNLOCK")  # actions are lower case
    assert shouted.stderr.endswith("did you mean account.unlock?\n")
    not_yet = cli("audit", "list", "--action", "letter.void")  # a word, not a typo: no hint
    assert not_yet.stderr == "Warning: no event was ever recorded with the action 'letter.void'\n"
    nothing_like = cli("audit", "list", "--action", "zzz")
    assert nothing_like.stderr == "Warning: no event was ever recorded with the action 'zzz'\n"
    # Recorded, but not for this member: no hint.
    other = cli("audit", "list", "--action", "account.unlock", "--nir", make_nir(77))
    assert (other.exit_code, other.stderr) == (0, "")


def test_pin_reset_by_email_then_set_pin_with_the_code(
    cli: Cli, session: Session, member: Member
) -> None:
    reset = cli("--json", "pin", "reset", member.nir, "--reason", "forgot PIN")
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["channel"] == "email"
    assert account_of(session, member).pin_hash is None
    old = cli("--json", "portal", "login", member.nir, input=f"{PIN}\n")
    assert json.loads(old.stdout)["reason"] == "no_pin"
    status = cli("account", "status", member.nir).stdout
    assert "No PIN since a reset; a pin_reset code sent by e-mail is valid until" in status
    assert "  code in flight: pin_reset by email, valid until 2026-11-23 10:10 CET, " in status
    (code,) = mailed_codes(cli.settings)
    done = cli("portal", "set-pin", member.nir, input=f"{code}\n{NEW_PIN}\n{NEW_PIN}\n")
    assert done.exit_code == 0, done.output
    assert "Votre modification a été prise en compte" in done.stdout
    assert cli("portal", "login", member.nir, input=f"{NEW_PIN}\n").exit_code == 0


def test_pin_reset_says_whether_there_was_a_pin(cli: Cli, session: Session, member: Member) -> None:
    """The agent reads what was done: a PIN revoked, or none there to revoke (the member
    never set one), never "the old PIN no longer works" for a PIN that never was."""
    first = cli("pin", "reset", member.nir, "--channel", "post", "--reason", "forgot")
    assert first.stdout.startswith("PIN reset: the old PIN no longer works; "), first.output
    never = make_member(session, welcome=False)
    assert account_of(session, never).pin_hash is None
    second = cli("pin", "reset", never.nir, "--channel", "post", "--reason", "asked")
    assert second.stdout.startswith("PIN reset: the member had no PIN yet; "), second.output
    again = cli("pin", "reset", member.nir, "--channel", "post", "--reason", "again")
    assert again.stdout.startswith(
        "PIN reset: the PIN was reset before and not set again since; "
    ), again.output


def test_a_reset_e_mail_to_a_member_who_never_had_a_pin_greets_a_newcomer(
    cli: Cli, session: Session
) -> None:
    never = make_member(session, welcome=False)
    assert cli("pin", "reset", never.nir, "--reason", "asked").exit_code == 0
    [message] = outbox(cli.settings)
    assert "première connexion" in message["Subject"]
    assert "réinitialis" not in text_of(message)


def test_pin_reset_by_post_queues_a_letter(cli: Cli, session: Session, member: Member) -> None:
    reset = cli("--json", "pin", "reset", member.nir, "--channel", "post", "--reason", "asked")
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["letter_id"] is not None
    view = json.loads(cli("--json", "member", "show", member.nir).stdout)
    assert [letter["kind"] for letter in view["pending_letters"]] == ["pin_reset"]
    again = cli("code", "issue", member.nir, "--channel", "post")
    assert "already waiting" in again.stdout
    assert outbox(cli.settings) == []


def test_a_code_by_post_rides_on_the_letter_the_batch_prints(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """The batch prints a member's newest letter and cancels the older ones: a code by post
    says, and records, the letter that will carry it, not one the batch will cancel."""
    member = make_member(session, welcome=False, email=None)
    give_pin(session, settings, member)  # a member's codes are then for a PIN reset
    assert cli("pin", "reset", member.nir, "--channel", "post", "--reason", "x").exit_code == 0
    queue_letter(
        session, member=member, kind="welcome", requested_by="x", now=clock()
    )  # a newer letter
    session.commit()

    def code_by_post() -> tuple[int, bool]:
        issued = cli("--json", "code", "issue", member.nir, "--channel", "post", "--reason", "x")
        assert issued.exit_code == 0, issued.output
        return json.loads(issued.stdout)["letter_id"], json.loads(issued.stdout)["letter_reused"]

    # Letter #1 (the PIN reset's) is for the same purpose, but #2 is newer: a new letter.
    assert code_by_post() == (3, False)
    assert code_by_post() == (3, True)  # now the newest: asked again, it carries the code
    summary = json.loads(cli("--json", "letters", "batch", "--out", str(tmp_path / "o")).stdout)
    assert [letter["letter_id"] for letter in summary["letters"]] == [3]
    # A letter left waiting behind a newer one printed since (a batch's files lost, printed
    # again meanwhile): the next batch cancels it, so a new code does not ride on it.
    older = queue_letter(
        session, member=member, kind="security_code", requested_by="x", now=clock()
    )
    newer = queue_letter(
        session, member=member, kind="security_code", requested_by="x", now=clock()
    )
    session.commit()
    session.exec(update(Letter).where(col(Letter.id) == pk(newer)).values(status="printed"))
    session.commit()
    assert (pk(older), pk(newer)) == (4, 5)
    assert code_by_post() == (6, False)


def test_code_issue_auto_falls_back_to_post_without_email(cli: Cli, session: Session) -> None:
    no_email = make_member(session, welcome=False, email=None)
    result = cli("--json", "code", "issue", no_email.nir, "--reason", "never got a code")
    assert result.exit_code == 0
    assert (json.loads(result.stdout)["channel"], outbox(cli.settings)) == ("post", [])
    diagnosis = cli("account", "status", no_email.nir).stdout
    assert "waits for the next print run" in diagnosis
    assert "No e-mail address: codes go by post" in diagnosis


def test_member_without_pin_or_code_is_told_what_to_run(cli: Cli, session: Session) -> None:
    newcomer = make_member(session, welcome=False)
    status = cli("account", "status", newcomer.nir).stdout
    assert "No PIN and no code on its way" in status
    assert f"Fix: cpms-admin code issue {newcomer.nir} --channel auto" in status


def test_a_blocked_member_without_a_pin_is_sent_a_code_not_only_unlocked(
    cli: Cli, clock: FakeClock, session: Session
) -> None:
    """Unlocked, they still could not log in: no PIN, no code on its way."""
    newcomer = make_member(session, welcome=False)
    for attempt in range(10):  # three wrong PINs cool it down, ten lock it
        cli("portal", "login", newcomer.nir, "--captcha-ok", input="605813\n")
        if attempt == 2:
            cooling = json.loads(cli("--json", "account", "status", newcomer.nir).stdout)
            assert cooling["state"] == "cooldown"
            clock.advance(hours=2)
        elif attempt > 2:
            clock.advance(hours=2)
    locked = json.loads(cli("--json", "account", "status", newcomer.nir).stdout)
    assert locked["state"] == "locked"
    for view in (cooling, locked):
        assert view["diagnosis"][0].endswith(
            "The member has no PIN and no code on its way: send one."
        )
        assert view["fix"].startswith(f"cpms-admin code issue {newcomer.nir} --channel auto")


def test_a_member_with_nothing_wrong_gets_no_fix_to_run(
    cli: Cli, session: Session, member: Member
) -> None:
    """A reset, offered as the fix, would take a working PIN away."""
    assert cli("portal", "login", member.nir, input=f"{PIN}\n").exit_code == 0
    view = json.loads(cli("--json", "account", "status", member.nir).stdout)
    assert view["diagnosis"][0].startswith("No problem found")
    assert view["fix"] is None
    assert "Fix:" not in cli("account", "status", member.nir).stdout
    # The reset it mentions, copied as it is, runs (it lacked its --reason).
    offered = view["diagnosis"][0].split("reset it (", 1)[1].removesuffix(").")
    assert offered == f'cpms-admin pin reset {member.nir} --channel auto --reason "..."'
    assert cli(*offered.split()[1:-2], "--reason", "forgotten").exit_code == 0


def test_a_closed_member_s_status_offers_no_code_by_any_channel(cli: Cli, session: Session) -> None:
    """A closed member gets no code at all (`code issue` refuses): a line saying codes go by
    post sent the agent to a refusal."""
    closed = make_member(session, welcome=False, email=None)
    assert cli("member", "close", closed.nir, "--reason", "left").exit_code == 0
    view = json.loads(cli("--json", "account", "status", closed.nir).stdout)
    assert len(view["diagnosis"]) == 1 and "cannot log in" in view["diagnosis"][0]
    assert not any("by post" in line for line in view["diagnosis"])


def test_status_says_a_code_on_its_way_has_died_and_why(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    """An attacker spent the code of a letter still in the post, or an e-mailed code expired:
    the member calls about a code that does not work, and the agent sees why."""
    by_post = make_member(session, welcome=False, email=None)
    assert cli("code", "issue", by_post.nir, "--reason", "x").exit_code == 0
    assert cli("letters", "batch", "--out", str(tmp_path / "print")).exit_code == 0
    for _ in range(5):
        clock.advance(hours=2)  # past each cool-down
        cli("portal", "set-pin", by_post.nir, "--with", "code", "--captcha-ok",
            input=f"000001\n{NEW_PIN}\n{NEW_PIN}\n")  # fmt: skip
    clock.advance(hours=2)  # the last cool-down over
    status = cli("--json", "account", "status", by_post.nir)
    (letter,) = codes_of(session, by_post)
    assert json.loads(status.stdout)["diagnosis"][:2] == [
        "No PIN and no code on its way: the member cannot log in. 5 failed attempts since the "
        "last success, the portal asks for a CAPTCHA; 5 left before the hard lock.",
        f"The code in letter #{letter.letter_id} (first_login, printed "
        f"{agent_time(letter.created_at)}) no longer works: 5 wrong codes typed at the portal "
        "spent it.",
    ]

    by_email = make_member(session, welcome=False)
    assert cli("code", "issue", by_email.nir, "--reason", "x").exit_code == 0
    clock.advance(minutes=11)
    (mailed,) = codes_of(session, by_email)
    assert (
        f"The first_login code e-mailed {agent_time(mailed.created_at)} no longer works: it "
        f"expired {agent_time(mailed.expires_at)}."
    ) in cli("account", "status", by_email.nir).stdout
    assert cli("code", "issue", by_email.nir, "--reason", "x").exit_code == 0
    fresh = mailed_codes(cli.settings)[-1]
    cli(
        "portal",
        "set-pin",
        by_email.nir,
        "--with",
        "code",
        input=f"{fresh}\n{NEW_PIN}\n{NEW_PIN}\n",
    )
    assert "no longer works" not in cli("account", "status", by_email.nir).stdout  # it was used


def test_status_of_a_member_without_pin_counts_the_failures_and_offers_the_unlock(
    cli: Cli, session: Session, clock: FakeClock
) -> None:
    """Wrong codes count against the account as wrong PINs do: 9 of them and a live code
    said only "5 tries left", no fix, while one more wrong code hard-locked the account."""
    member = make_member(session, welcome=False)
    quick = cli.with_settings(lockout_cooldown_seconds=1, lockout_cooldown_cap_seconds=1)
    assert quick("code", "issue", member.nir, "--reason", "x").exit_code == 0
    for _ in range(9):
        clock.advance(seconds=2)  # past each cool-down, the code still live
        quick("portal", "login", member.nir, "--captcha-ok", input="111119\n")
    clock.advance(seconds=2)  # the last cool-down over
    status = json.loads(quick("--json", "account", "status", member.nir).stdout)
    assert status["diagnosis"][0].endswith(
        "; but 9 failed attempts since the last success, the portal asks for a CAPTCHA; "
        "1 left before the hard lock."
    ), status["diagnosis"]
    assert status["fix"] == f'cpms-admin account unlock {member.nir} --reason "..."'


def test_status_says_why_a_code_was_revoked(cli: Cli, session: Session) -> None:
    """The member says "the code you sent me does not work": the agent reads which action
    revoked it, and a code revoked before the reason was kept (0019) keeps the general words."""
    member = make_member(session, welcome=False)
    assert cli("code", "issue", member.nir, "--reason", "phone").exit_code == 0
    (mailed,) = codes_of(session, member)
    changed = cli("member", "update", member.nir, "--email", "new.address@example.org")
    assert changed.exit_code == 0, changed.output
    said = (
        f"The first_login code e-mailed {agent_time(mailed.created_at)} no longer works: it "
        "was revoked"
    )
    diagnosis = json.loads(cli("--json", "account", "status", member.nir).stdout)["diagnosis"]
    assert f"{said}: it was e-mailed to an address changed since." in diagnosis

    session.rollback()  # a fresh transaction: the commands wrote since this one read
    session.exec(update(SecurityCode).values(revoked_reason=None))
    session.commit()
    diagnosis = json.loads(cli("--json", "account", "status", member.nir).stdout)["diagnosis"]
    assert f"{said} (an address or e-mail changed, a letter came back, an agent)." in diagnosis


def test_code_rules_through_the_cli(cli: Cli, clock: FakeClock, session: Session) -> None:
    newcomer = make_member(session, welcome=False)

    def set_pin(secret: str, new: str = NEW_PIN, again: str = NEW_PIN) -> dict[str, object]:
        result = cli("--json", "portal", "set-pin", newcomer.nir, "--with", "code",
                     "--captcha-ok", input=f"{secret}\n{new}\n{again}\n")  # fmt: skip
        return dict(json.loads(result.stdout), exit_code=result.exit_code)

    assert cli("code", "issue", newcomer.nir).exit_code == 0
    (code,) = mailed_codes(cli.settings)
    assert set_pin(code, again="739265")["reason"] == "mismatch"
    assert set_pin(code, "123456", "123456")["reason"] == "weak_pin"
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    tries = []
    for _ in range(5):
        tries.append(set_pin(wrong))
        clock.advance(seconds=120)  # past the cool-downs so far, within the code's 10 min
    # Each wrong code spends the account's budget: 3 before the cool-down, 10 in all.
    assert [(t["reason"], t["remaining_attempts"], t["exit_code"]) for t in tries] == [
        ("wrong_code", left, 1) for left in (2, 1, 7, 6, 5)
    ]
    clock.advance(seconds=240)
    dead = set_pin(code)
    assert (dead["exit_code"], dead["reason"]) == (1, "dead_code")
    clock.advance(seconds=480)
    cli("code", "issue", newcomer.nir)
    expiring = mailed_codes(cli.settings)[-1]
    clock.advance(minutes=11)
    assert set_pin(expiring)["reason"] == "dead_code"
    clock.advance(minutes=17)  # the 7th failure's cool-down
    cli("code", "issue", newcomer.nir)
    fresh = mailed_codes(cli.settings)[-1]
    fresh_result = set_pin(fresh)
    assert fresh_result["ok"] is True, fresh_result
    assert set_pin(fresh)["reason"] == "code_used"  # single use: typed again, not a guess
    assert set_pin(f"{(int(fresh) + 1) % 1_000_000:06d}")["reason"] == "dead_code"
    # That dead code was the first failure since the PIN was set: wrong PINs go on from it.
    second = json.loads(cli("--json", "portal", "login", newcomer.nir, input="605813\n").stdout)
    assert second["message"] == (
        "Mot de passe erroné. Attention, il vous reste 1 tentative avant de devoir patienter "
        "1 minute."
    )
    third = cli("--json", "portal", "login", newcomer.nir, input="605813\n")
    assert json.loads(third.stdout)["retry_after_seconds"] == 60
    clock.advance(seconds=60)
    captcha = cli("--json", "portal", "login", newcomer.nir, input=f"{NEW_PIN}\n")
    assert json.loads(captcha.stdout)["reason"] == "captcha_required"
    ok = cli("portal", "login", newcomer.nir, "--captcha-ok", input=f"{NEW_PIN}\n")
    assert ok.exit_code == 0


# --- SMTP on loopback -------------------------------------------------------------------------


def test_code_by_email_through_a_real_smtp_server(cli: Cli, session: Session) -> None:
    newcomer = make_member(session, welcome=False)
    with smtp_server() as (inbox, port):
        smtp = cli.with_settings(smtp_url=f"smtp://127.0.0.1:{port}")
        sent = smtp("portal", "request-code", newcomer.nir)
        assert sent.exit_code == 0, sent.output
        assert len(inbox.envelopes) == 1
        content = inbox.envelopes[0].content
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        body = message.get_body(("plain",))
        assert body is not None
        code = body.get_content().split("Votre code de sécurité : ")[1][:6]
        done = smtp("portal", "set-pin", newcomer.nir, input=f"{code}\n{NEW_PIN}\n{NEW_PIN}\n")
        assert done.exit_code == 0, done.output
        assert len(inbox.envelopes) == 2  # the "PIN created" notice
    assert outbox(cli.settings) == []


def test_smtp_failure_leaves_no_live_code(cli: Cli, session: Session, member: Member) -> None:
    down = cli.with_settings(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    result = down("code", "issue", member.nir, "--reason", "lost PIN")
    assert result.exit_code == 1
    assert "cannot send e-mail via smtp://127.0.0.1" in result.stderr
    assert f"cpms-admin code issue {member.nir} --channel post" in result.stderr
    assert [row.status for row in codes_of(session, member)] == ["revoked"]
    audit = json.loads(cli("--json", "audit", "list", "--action", "code.revoke").stdout)
    assert [(e["label"], e["outcome"]) for e in audit] == [("agent.test", "mail_failed")]
    assert "PIN stays reset" not in result.stderr
    reset = down("pin", "reset", member.nir, "--reason", "forgot")
    assert reset.exit_code == 1 and "--channel post" in reset.stderr
    # Exit 1, but the reset stands: the agent must not think the member can still log in.
    assert "The PIN stays reset and older codes revoked: the member cannot log in" in (reset.stderr)
    assert {row.status for row in codes_of(session, member)} == {"revoked"}
    status = json.loads(cli("--json", "account", "status", member.nir).stdout)
    assert any(  # why, and not the same address again: a letter
        line.endswith("it was revoked: the e-mail carrying it could not be sent.")
        for line in status["diagnosis"]
    ), status["diagnosis"]
    assert status["fix"] == f'cpms-admin code issue {member.nir} --channel post --reason "..."'
    fallback = down("--json", "code", "issue", member.nir, "--channel", "post", "--reason", "x")
    assert (fallback.exit_code, json.loads(fallback.stdout)["channel"]) == (0, "post")


def test_status_says_what_the_next_print_run_does_with_each_letter(
    cli: Cli, clock: FakeClock, session: Session, settings: Settings, tmp_path: Path
) -> None:
    """A welcome letter for a member who set a PIN meanwhile is cancelled by the batch: the
    diagnosis says so, in the words `letters list` shows once it is done, and the batch
    agrees."""
    member = make_member(session, welcome=True, email=None)  # enrolment letter #1 queued
    give_pin(session, settings, member)
    status = cli("account", "status", member.nir)
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert "  letter waiting: #1 welcome (the next print run cancels it)" in lines
    assert (
        "  - Letter #1 (welcome) will be cancelled by the next print run: welcome letter, but the "
        "member already has a PIN." in lines
    )
    assert not [line for line in lines if "waits for the next print run" in line]
    view = json.loads(cli("--json", "account", "status", member.nir).stdout)
    assert [(x["id"], x["moot"]) for x in view["pending_letters"]] == [
        (1, "welcome letter, but the member already has a PIN")
    ]
    # A code by post for the same member: that letter is the one the run prints.
    assert cli("code", "issue", member.nir, "--channel", "post", "--reason", "x").exit_code == 0
    for command in ("account", "status"), ("member", "show"):  # as the agent reads it
        view = json.loads(cli("--json", *command, member.nir).stdout)
        assert [(x["id"], x["moot"]) for x in view["pending_letters"]] == [
            (1, "welcome letter, but the member already has a PIN"),
            (2, None),
        ]
    assert cli("member", "show", member.nir).stdout.splitlines()[-2:] == [
        "  pending letter: #1 welcome (the next print run cancels it)",
        "  pending letter: #2 security_code",
    ]
    lines = cli("account", "status", member.nir).stdout.splitlines()
    assert lines[lines.index("Diagnosis:") + 2 :][:2] == [
        "  - In flight: letter #2 (security_code) with a code waits for the next print run.",
        "  - Letter #1 (welcome) will be cancelled by the next print run: welcome letter, but "
        "the member already has a PIN.",
    ]
    # A newcomer's enrolment letter, then a code by e-mail: the letter's code would revoke it.
    newcomer = make_nir()
    added = cli("member", "add", "--nir", newcomer, "--last-name", "Roux", "--first-name", "Léa",
                "--email", "lea@example.fr", "--street", "4 rue Sala", "--postcode", "69002",
                "--city", "Lyon")  # fmt: skip
    assert added.exit_code == 0, added.output  # letter #3
    clock.advance(minutes=1)
    assert cli("code", "issue", newcomer, "--reason", "x").exit_code == 0
    lines = cli("account", "status", newcomer).stdout.splitlines()
    assert lines[lines.index("Diagnosis:") + 2] == (
        "  - Letter #3 (welcome) will be cancelled by the next print run: a newer code was issued "
        "after it was queued (2026-11-23 10:01 CET)."
    )
    batch = cli("--json", "letters", "batch", "--out", str(tmp_path / "print"))
    assert batch.exit_code == 0, batch.output
    done = json.loads(cli("--json", "letters", "list").stdout)
    assert sorted((x["id"], x["status"], x["status_reason"]) for x in done) == [
        (1, "cancelled", "welcome letter, but the member already has a PIN"),
        (2, "printed", None),
        (3, "cancelled", "a newer code was issued after it was queued (2026-11-23 10:01 CET)"),
    ]


def test_status_names_a_letter_the_batch_could_not_print_and_how_to_fix_it(
    cli: Cli, tmp_path: Path
) -> None:
    """An address too wide for the envelope's window fails its letter at print: "send a
    code" by post would fail the same way, so the fix is the address, for as long as the
    address as it is now does not fit (however it changed: a move, or a word abbreviated)."""
    wide = "12 boulevard " + "W" * 25
    nir = make_nir()
    added = cli("member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Léa",
                "--street", wide, "--postcode", "75002", "--city", "Paris")  # fmt: skip
    assert added.exit_code == 0, added.output  # saved, and the agent told at once
    assert added.stderr == (
        "Warning: no letter to this address can be printed: an address line is wider than the "
        "envelope's window even in 8 pt: shorten it (cpms-admin member update)\n"
    )
    assert cli("letters", "batch", "--out", str(tmp_path / "one")).exit_code == 0
    view = json.loads(cli("--json", "account", "status", nir).stdout)
    assert view["unprintable_letter"]["id"] == 1
    assert "wider than the envelope's window" in view["unprintable_letter"]["reason"]
    assert view["diagnosis"][1].startswith(
        "Letter #1 (welcome) could not be printed, and a letter to the address as it is now "
        "would fail the same way: an address line is wider than the envelope's window"
    )
    assert view["fix"].startswith(f"cpms-admin member update {nir} with shorter lines")
    shortened = cli("member", "update", nir, "--street", "12 bd " + "W" * 25, "--reason", "x")
    assert (shortened.exit_code, shortened.stderr) == (0, "")  # not a move: the same address
    view = json.loads(cli("--json", "account", "status", nir).stdout)
    assert view["unprintable_letter"] is None
    assert view["fix"] == f'cpms-admin code issue {nir} --channel auto --reason "..."'
    # An address made too wide after the letter was queued: the batch prints it as it is then.
    other = make_nir()
    added = cli("member", "add", "--nir", other, "--last-name", "Roux", "--first-name", "Zoé",
                "--street", "1 rue A", "--postcode", "75002", "--city", "Paris")  # fmt: skip
    assert added.exit_code == 0, added.output
    widened = cli("member", "update", other, "--street", wide, "--reason", "moved")
    assert (widened.exit_code, "Warning: no letter to this address" in widened.stderr) == (0, True)
    assert cli("letters", "batch", "--out", str(tmp_path / "two")).exit_code == 0
    view = json.loads(cli("--json", "account", "status", other).stdout)
    assert view["unprintable_letter"]["kind"] == "welcome"
