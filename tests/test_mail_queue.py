"""`mail send`: campaign e-mails leave with a code made at send time that works; failures
revoke the unsent code and are retried, then given up; a dead server stops the run."""

import json
import os
import subprocess
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cpms_admin.clock import iso
from cpms_admin.credentials.code_hash import verify_code
from cpms_admin.mail.queue import MAX_ATTEMPTS, STOP_AFTER, send_queued_mail
from cpms_admin.mail.transport import transport_from_settings
from cpms_admin.members.records import close_member
from cpms_admin.models import Account, AuditEvent, Member, OutgoingMail, SecurityCode
from cpms_admin.settings import Settings
from tests.audit_helpers import audit_of, run_event, run_id
from tests.cred_helpers import mailed_codes, outbox, text_of
from tests.factories import make_member, snapshot
from tests.harness import TEST_PEPPER, Cli, FakeClock
from tests.process_helpers import start_held


def queue(cli: Cli, session: Session, count: int) -> list[Member]:
    members = [
        make_member(session, welcome=False, email=f"adherent{n}@example.fr") for n in range(count)
    ]
    result = cli("code", "campaign", "--no-pin", "--channel", "email", "--reason", "migration")
    assert result.exit_code == 0, result.output
    return members


def mails(session: Session) -> list[OutgoingMail]:
    session.rollback()
    return list(session.exec(select(OutgoingMail).order_by(col(OutgoingMail.id))))


def codes(session: Session) -> list[SecurityCode]:
    session.rollback()
    return list(session.exec(select(SecurityCode).order_by(col(SecurityCode.id))))


def send(cli: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
    result = cli("--json", "mail", "send", *args)
    return result.exit_code, json.loads(result.stdout), result.stderr


def broken(cli: Cli, tmp_path: Path) -> Cli:
    """A mail directory that cannot be created: every send fails with a MailError."""
    (tmp_path / "not-a-dir").write_text("")
    return cli.with_settings(mail_dir=str(tmp_path / "not-a-dir" / "outbox"))


def test_queued_emails_leave_with_a_code_that_works(
    cli: Cli, session: Session, settings: Settings
) -> None:
    members = queue(cli, session, 3)
    assert outbox(settings) == [] and codes(session) == []  # no code before sending
    code, result, _ = send(cli)
    assert code == 0
    assert result == {
        "sent": 3,
        "retry": 0,
        "failed": 0,
        "cancelled": 0,
        "left": 0,
        "stopped": None,
    }
    messages = outbox(settings)
    assert sorted(str(m["To"]) for m in messages) == sorted(
        f"{m.first_name} {m.last_name} <{m.email}>" for m in members
    )
    assert "première connexion" in str(messages[0]["Subject"])
    stored = codes(session)
    assert [(c.channel, c.purpose, c.status) for c in stored] == [
        ("email", "first_login", "pending")
    ] * 3
    by_member = {c.member_id: c for c in stored}
    for message, clear in zip(messages, mailed_codes(settings), strict=True):
        member = next(m for m in members if f"<{m.email}>" in str(message["To"]))
        row = by_member[member.id]
        assert verify_code(pepper=TEST_PEPPER.encode(), code=clear, stored=row.code_hash)
        assert clear not in json.dumps([list(t) for t in snapshot(session).values()], default=str)
    assert [(m.status, m.attempts) for m in mails(session)] == [("sent", 1)] * 3
    assert send(cli)[1]["sent"] == 0  # nothing left: sending again sends nothing


def test_a_queued_code_logs_the_member_in_to_set_a_pin(
    cli: Cli, session: Session, settings: Settings
) -> None:
    (member,) = queue(cli, session, 1)
    send(cli)
    (clear,) = mailed_codes(settings)
    result = cli("--json", "portal", "set-pin", member.nir, input=f"{clear}\n482915\n482915\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_a_failed_send_revokes_its_code_and_is_retried_then_given_up(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    (member,) = queue(cli, session, 1)
    down = broken(cli, tmp_path)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        code, result, _ = send(down)
        last = attempt == MAX_ATTEMPTS
        assert code == (1 if last else 0)  # given up: cron hears of it
        assert (result["retry"], result["failed"]) == ((0, 1) if last else (1, 0))
        (mail,) = mails(session)
        assert (mail.attempts, mail.status) == (attempt, "failed" if last else "pending")
        assert mail.last_error is not None and "cannot write e-mail" in mail.last_error
    assert [c.status for c in codes(session)] == ["revoked"] * MAX_ATTEMPTS
    # The attempts before left the e-mail queued: the run that gave up tells the member's story.
    given_up = run_id(run_event(cli, "mail.send"))
    assert mail_story(cli, member) == [("agent.test", {"change": "failed", "run": given_up})]
    assert send(cli)[1]["sent"] == 0  # given up: not sent even once the server is back


def test_a_dead_server_stops_the_run_and_leaves_the_rest_queued(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    queue(cli, session, STOP_AFTER + 2)
    code, result, stderr = send(broken(cli, tmp_path))
    assert code == 1
    assert (result["retry"], result["left"]) == (STOP_AFTER, STOP_AFTER + 2)
    assert f"mail send stopped: {STOP_AFTER} e-mails in a row could not be sent" in stderr
    assert [m.attempts for m in mails(session)] == [1] * STOP_AFTER + [0, 0]
    code, result, _ = send(cli)  # the server is back
    assert (code, result["sent"], result["left"]) == (0, STOP_AFTER + 2, 0)
    assert len(outbox(settings)) == STOP_AFTER + 2


def test_limit_and_members_who_left_or_lost_their_address(
    cli: Cli, session: Session, settings: Settings
) -> None:
    members = queue(cli, session, 4)
    cli("member", "close", members[0].nir, "--reason", "left")
    cli("member", "update", members[1].nir, "--clear-email")
    code, result, _ = send(cli, "--limit", "3")
    assert (code, result["sent"], result["cancelled"], result["left"]) == (0, 1, 2, 1)
    assert [(m.status, m.last_error) for m in mails(session)] == [
        ("cancelled", "member closed"),
        ("cancelled", "no e-mail address"),
        ("sent", None),
        ("pending", None),
    ]
    assert send(cli)[1]["sent"] == 1


def test_a_run_has_its_event_then_a_closing_event_with_its_counts(
    cli: Cli, session: Session
) -> None:
    queue(cli, session, 2)
    send(cli)
    send(cli)  # nothing to do: no event
    session.rollback()
    query = select(AuditEvent).where(AuditEvent.action == "mail.send")
    started, closing = session.exec(query.order_by(col(AuditEvent.seq))).all()
    assert (started.label, started.outcome, started.details) == ("agent.test", "started", "{}")
    assert (closing.label, closing.outcome) == ("agent.test", "ok")
    assert {k: json.loads(closing.details)[k] for k in ("sent", "run")} == {
        "sent": 2,
        "run": started.id,
    }


def mail_story(cli: Cli, member: Member) -> list[tuple[str, Any]]:
    """What `audit list --nir` shows of `mail send` runs for the member: (label, details)."""
    story = audit_of(cli, member.nir)
    return [(e["label"], e["details"]) for e in story if e["action"] == "mail.send.member"]


def test_audit_list_nir_shows_the_email_sent_or_cancelled(cli: Cli, session: Session) -> None:
    sent, closed, later = queue(cli, session, 3)
    cli("member", "close", closed.nir, "--reason", "left")
    assert send(cli, "--limit", "2")[1]["sent"] == 1
    first = run_id(run_event(cli, "mail.send"))
    assert mail_story(cli, sent) == [("agent.test", {"change": "sent", "run": first})]
    assert mail_story(cli, closed) == [("agent.test", {"change": "cancelled", "run": first})]
    assert mail_story(cli, later) == []  # past the limit: still queued, untouched
    send(cli)
    second = run_id(run_event(cli, "mail.send"))
    assert mail_story(cli, later) == [("agent.test", {"change": "sent", "run": second})]
    (event,) = [e for e in audit_of(cli, later.nir) if e["action"] == "mail.send.member"]
    (mail,) = [m for m in mails(session) if m.member_id == later.id]
    assert (event["outcome"], event["reason"], event["nir"]) == ("ok", None, later.nir)
    assert event["at"] == iso(mail.sent_at)


def test_text_of_a_campaign_email_names_the_member(
    cli: Cli, session: Session, settings: Settings
) -> None:
    (member,) = queue(cli, session, 1)
    send(cli)
    (message,) = outbox(settings)
    assert f"Madame {member.last_name}" in text_of(message)


def test_the_purpose_is_decided_when_sending(cli: Cli, session: Session) -> None:
    (member,) = queue(cli, session, 1)
    session.rollback()
    account = session.get(Account, member.id)
    assert account is not None
    account.pin_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"  # set a PIN since
    session.commit()
    send(cli)
    assert [c.purpose for c in codes(session)] == ["pin_reset"]
    assert mails(session)[0].purpose == "pin_reset"


def test_a_campaign_email_does_not_tell_the_member_they_asked_for_it(
    cli: Cli, session: Session, settings: Settings
) -> None:
    (member,) = queue(cli, session, 1)
    session.rollback()
    account = session.get(Account, member.id)
    assert account is not None
    account.pin_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"  # a PIN: a pin_reset code
    session.commit()
    send(cli)
    (campaign,) = outbox(settings)
    assert "Le CPMS vous adresse un code de sécurité" in text_of(campaign)
    assert "demandé" not in text_of(campaign)
    issued = cli("code", "issue", member.nir, "--channel", "email", "--reason", "called us")
    assert issued.exit_code == 0, issued.output
    asked = next(m for m in outbox(settings) if m["Message-ID"] != campaign["Message-ID"])
    assert "Comme suite à votre demande auprès de notre service Adhérents" in text_of(asked)
    assert "Vous avez demandé" not in text_of(asked)  # not on the portal: an agent sent it
    assert "contactez notre service Adhérents" in text_of(asked)


def test_a_code_already_on_its_way_is_not_revoked_by_a_campaign_email(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    """The e-mail was queued; since then an agent sent a letter (printed, its code live) or
    one waits to be printed: the e-mail is cancelled and the letter's code still works."""
    printed, waiting = queue(cli, session, 2)
    assert cli("code", "issue", printed.nir, "--channel", "post").exit_code == 0
    assert cli("letters", "batch", "--out", str(tmp_path / "print")).exit_code == 0
    assert cli("code", "issue", waiting.nir, "--channel", "post").exit_code == 0
    code, result, _ = send(cli)
    assert (code, result["sent"], result["cancelled"]) == (0, 0, 2)
    assert [(m.status, m.last_error) for m in mails(session)] == [
        ("cancelled", "a code is already on its way"),
        ("cancelled", "a letter is already on its way"),
    ]
    assert [c.status for c in codes(session)] == ["pending"]  # the printed letter's code
    assert outbox(settings) == []


def test_a_member_who_set_a_pin_since_the_email_was_queued_is_not_mailed(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock
) -> None:
    """Queued to invite members to create their password; one asked the portal for a code
    and set a PIN before `mail send` ran: a letter would be cancelled for it, and so is the
    e-mail (it said "créer votre mot de passe", with a live code)."""
    (member,) = queue(cli, session, 1)
    clock.advance(minutes=5)
    asked = cli("portal", "request-code", member.nir)
    assert asked.exit_code == 0, asked.output
    (code,) = mailed_codes(settings)
    done = cli("portal", "set-pin", member.nir, input=f"{code}\n284917\n284917\n")
    assert done.exit_code == 0, done.output
    sent_before = len(outbox(settings))
    status, result, _ = send(cli)
    assert (status, result["sent"], result["cancelled"]) == (0, 0, 1)
    assert [(m.status, m.last_error) for m in mails(session)] == [
        ("cancelled", "a newer code was issued after it was queued"),
    ]
    assert len(outbox(settings)) == sent_before  # no code e-mailed, no live code left
    assert [c.status for c in codes(session)] == ["used"]


def test_an_unexpected_error_while_sending_leaves_no_live_code(
    cli: Cli, session: Session, settings: Settings, monkeypatch: Any
) -> None:
    queue(cli, session, 1)

    def template_gone(**_: Any) -> None:
        raise RuntimeError("template vanished")

    monkeypatch.setattr("cpms_admin.mail.compose.security_code_message", template_gone)
    result = cli("mail", "send")
    assert result.exit_code != 0
    assert [c.status for c in codes(session)] == ["revoked"]
    assert outbox(settings) == []


def test_a_member_closed_while_the_run_sends_is_not_mailed(
    cli: Cli, session: Session, settings: Settings, engine: Engine
) -> None:
    """The run reads e-mails by batches; what happened to a member since still counts."""
    first, second = queue(cli, session, 2)
    files = transport_from_settings(settings)

    class ClosingSecondMember:
        def send(self, message: EmailMessage) -> None:
            files.send(message)
            with Session(engine) as other:
                close_member(other, nir=second.nir, reason="départ", agent="agent.test")

    run = send_queued_mail(
        session, settings=settings, agent="cron", transport=ClosingSecondMember()
    )
    assert (run.counts.sent, run.counts.cancelled) == (1, 1)
    assert [(m.member_id, m.status) for m in mails(session)] == [
        (first.id, "sent"),
        (second.id, "cancelled"),
    ]


def while_mail_send_holds(
    cli: Cli, point: str, tmp_path: Path, action: Callable[[], Any]
) -> tuple[Any, subprocess.CompletedProcess[str]]:
    """`action`'s result, run while a real `mail send --json` stands at hold point `point`,
    and that run's outcome once let go."""
    held_here = tmp_path / "held"  # the run stands at `point` while this exists
    run = start_held(
        ["--json", "mail", "send"],
        env={**os.environ, **cli.env()},
        point=point,
        flag=held_here,
    )
    try:
        result = action()
    finally:
        held_here.unlink(missing_ok=True)
        out, err = run.communicate(timeout=120)
    return result, subprocess.CompletedProcess(run.args, run.returncode, out, err)


def test_a_second_run_while_one_sends_is_refused_and_each_email_leaves_once(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Cron starts `mail send` again while a slow run still sends. The second run used to
    take e-mails the first had claimed for a killed run's: it revoked the code on its way,
    sent a second e-mail, and marked delivered ones cancelled. Now it is refused (exit 4)."""
    queue(cli, session, 1)  # one: the hold point holds at every e-mail
    second, first = while_mail_send_holds(
        cli, "mail.before_send", tmp_path, lambda: cli("--json", "mail", "send")
    )
    assert second.exit_code == 4, second.output
    assert second.stderr == "Error: another mail send is running\n"
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sent"] == 1
    assert [mail.status for mail in mails(session)] == ["sent"]
    assert len(outbox(cli.settings)) == 1
    assert send(cli)[0] == 0  # the lock died with the run


def test_a_code_revoked_while_its_e_mail_waited_is_not_sent(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The campaign's code was stored and about to leave when an agent's newer code reached
    the member and revoked it: the run used to send it anyway, counted `sent`, and the member
    typed a dead code (a wrong code, one of the account's tries)."""
    (member,) = queue(cli, session, 1)
    agent_sent, run = while_mail_send_holds(
        cli,
        "mail.before_send",
        tmp_path,
        # On the system clock, as the held run made its code: the agent's is the newer.
        lambda: Cli(cli.settings)("code", "issue", member.nir, "--reason", "called"),
    )
    assert agent_sent.exit_code == 0, agent_sent.output
    assert run.returncode == 0, run.stderr
    assert (json.loads(run.stdout)["sent"], json.loads(run.stdout)["cancelled"]) == (0, 1)
    assert [mail.status for mail in mails(session)] == ["cancelled"]
    (agents,) = mailed_codes(cli.settings)  # the agent's e-mail alone left
    assert [(c.status, c.revoked_reason) for c in codes(session)] == [
        ("revoked", "superseded"),
        ("pending", None),
    ]
    assert verify_code(pepper=TEST_PEPPER.encode(), code=agents, stored=codes(session)[1].code_hash)


def test_an_agent_s_code_overtaken_before_it_left_is_not_sent_and_says_so(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Two agents send a code to one member at once; the first's stands between its commit
    and its e-mail while the second's goes out. The first is not sent (exit 4), audited."""
    member = make_member(session, welcome=False)
    now = Cli(cli.settings)  # on the system clock, as the held run
    held_here = tmp_path / "held"
    first = start_held(
        ["code", "issue", member.nir, "--reason", "first"],
        env={**os.environ, **cli.env()},
        point="code.before_send",
        flag=held_here,
    )
    try:
        assert now("code", "issue", member.nir, "--reason", "second").exit_code == 0
    finally:
        held_here.unlink(missing_ok=True)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 4, err
    assert err.startswith("Error: the code for ") and "was not e-mailed: a newer code" in err
    (sent,) = mailed_codes(cli.settings)  # the second agent's alone
    assert [(c.status, c.revoked_reason) for c in codes(session)] == [
        ("revoked", "superseded"),
        ("pending", None),
    ]
    assert verify_code(pepper=TEST_PEPPER.encode(), code=sent, stored=codes(session)[1].code_hash)
    revokes = json.loads(cli("--json", "audit", "list", "--action", "code.revoke").stdout)
    assert [e["outcome"] for e in revokes] == ["superseded"]


def test_an_address_changed_before_the_claim_gets_no_live_code_at_the_old_one(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The run looked at the member; an agent then changed their e-mail, revoking the codes
    on their way, before the run claimed the e-mail and made its code. The run used to send
    that code, live, to the address it had looked at; now it reads the address with it."""
    (member,) = queue(cli, session, 1)
    former = f"<{member.email}>"
    moved, run = while_mail_send_holds(  # between the run's first look and its claim
        cli,
        "mail.before_claim",
        tmp_path,
        lambda: cli("member", "update", member.nir, "--email", "nouvelle@example.fr"),
    )
    assert moved.exit_code == 0, moved.output
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["sent"] == 1
    (message,) = outbox(cli.settings)
    (clear,) = mailed_codes(cli.settings)
    now = Cli(cli.settings)  # the run's clock, the system's, for the code it made
    tried = now("--json", "portal", "set-pin", member.nir, input=f"{clear}\n482915\n482915\n")
    works, to_old = json.loads(tried.stdout)["ok"], former in str(message["To"])
    assert not (to_old and works), "the code e-mailed to the former address works"
    assert (to_old, works) == (False, True)  # it went to the new address, and works there
