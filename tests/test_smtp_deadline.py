"""SMTP sessions end within their overall deadline, however slowly the server drips bytes.

The slow servers (tests/slow_smtp.py) are real sockets on 127.0.0.1 playing a short script.
Each byte comes well within the per-operation timeout, so only the deadline can stop the
client. Every server stops by itself, so no test can hang on one.
"""

import inspect
import threading
import time
from pathlib import Path

import pytest

from cpms_admin.errors import MailError, MailTimeout
from cpms_admin.mail import transport
from cpms_admin.mail.transport import SmtpTransport
from cpms_admin.settings import Settings
from tests.mail_helpers import CODE, PASSWORD, QUOTED, code_mail, server_tls, smtp_server
from tests.slow_smtp import DRIP, Script, Talk, drip_greeting, slow_server

TIMEOUT, DEADLINE = 2.0, 3.0  # per operation, per session
assert DRIP < TIMEOUT  # each byte of a drip comes well within the per-operation timeout


def greet_and_ehlo(talk: Talk, *, starttls: bool = False) -> None:
    talk.say("220 slow.test ESMTP")
    assert talk.command().upper().startswith("EHLO")
    talk.say("250-slow.test" if starttls else "250 slow.test")
    if starttls:
        talk.say("250 STARTTLS")


def up_to_the_message(talk: Talk) -> None:
    """A quick, normal exchange up to and including the message's lone dot."""
    greet_and_ehlo(talk)
    assert talk.command().upper().startswith("MAIL FROM:")
    talk.say("250 2.1.0 OK")
    assert talk.command().upper().startswith("RCPT TO:")
    talk.say("250 2.1.5 OK")
    assert talk.command().upper() == "DATA"
    talk.say("354 go ahead")
    talk.take_message()


def cut_at_the_deadline(url: str, where: str) -> MailTimeout:
    started = time.monotonic()
    with pytest.raises(MailTimeout) as cut:
        SmtpTransport(url, timeout=TIMEOUT, deadline=DEADLINE).send(code_mail())
    elapsed = time.monotonic() - started
    assert DEADLINE - 0.1 <= elapsed < 6, elapsed  # the deadline, not the timeout, ended it
    message = str(cut.value)
    assert message == (
        f"cannot send e-mail via {where}: no complete answer within {DEADLINE:g} s (deadline)"
    )
    assert "\n" not in message and CODE not in message
    return cut.value


def test_the_settings_give_the_deadline() -> None:
    """The transport made from the settings stops a dripping server at the settings'
    deadline; one made without settings uses the settings' default deadline."""
    with slow_server(drip_greeting) as (port, played):
        settings = Settings(smtp_url=f"smtp://127.0.0.1:{port}", smtp_deadline_seconds=1)
        chosen = transport.transport_from_settings(settings)
        assert isinstance(chosen, SmtpTransport)
        started = time.monotonic()
        with pytest.raises(MailTimeout, match=r"no complete answer within 1 s \(deadline\)$"):
            chosen.send(code_mail())
        assert time.monotonic() - started < DEADLINE  # 1 s, well before the other limits
    assert played.client_gone
    default = inspect.signature(SmtpTransport).parameters["deadline"].default
    assert default == Settings().smtp_deadline_seconds
    assert issubclass(MailTimeout, MailError)
    with pytest.raises(ValueError, match="positive"):
        SmtpTransport("smtp://127.0.0.1:25", deadline=0)


# --- Slow drips in plain SMTP -----------------------------------------------------------


def drip_ehlo_reply(talk: Talk) -> None:
    talk.say("220 slow.test ESMTP")
    talk.command()
    talk.drip("250-slow.test\r\n250-PIPELINING\r\n250-")


@pytest.mark.slow  # waits for the deadline
@pytest.mark.parametrize("script", [drip_greeting, drip_ehlo_reply], ids=["greeting", "ehlo"])
def test_a_dripping_server_is_cut_at_the_deadline(script: Script) -> None:
    with slow_server(script) as (port, played):
        failure = cut_at_the_deadline(
            f"smtp://{QUOTED}@127.0.0.1:{port}", f"smtp://127.0.0.1:{port}"
        )
        for secret in (PASSWORD, "p%40ss"):
            assert secret not in str(failure)
    assert played.client_gone
    assert played.longest_silence < TIMEOUT  # no single read could time out


def drip_reply_to_the_message(talk: Talk) -> None:
    up_to_the_message(talk)
    talk.drip("250 2.0.0 queued as ")


@pytest.mark.slow  # waits for the deadline
def test_a_drip_after_the_message_data_is_cut_at_the_deadline() -> None:
    """The cut ends the read on `250 2.0.0 queued as ...` without its CRLF: a truncated
    reply, which must not pass for the server's acceptance of the message."""
    with slow_server(drip_reply_to_the_message) as (port, played):
        cut_at_the_deadline(f"smtp://127.0.0.1:{port}", f"smtp://127.0.0.1:{port}")
    assert played.commands[-1] == "."  # the whole message went, its answer never came
    assert played.client_gone
    assert played.longest_silence < TIMEOUT


def drip_goodbye(talk: Talk) -> None:
    up_to_the_message(talk)
    talk.say("250 2.0.0 queued")
    assert talk.command().upper() == "QUIT"
    talk.drip("221 2.0.0 bye")


@pytest.mark.slow  # waits for the deadline
def test_an_accepted_message_is_sent_even_if_quit_drips_but_quit_ends_at_the_deadline() -> None:
    """The message was accepted, so the send succeeds; but a dripping QUIT does not hold it."""
    with slow_server(drip_goodbye) as (port, played):
        started = time.monotonic()
        SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=TIMEOUT, deadline=DEADLINE).send(
            code_mail()
        )
        assert time.monotonic() - started < DEADLINE + 1
    assert played.commands[-1] == "QUIT"
    assert played.client_gone


def test_a_silent_server_is_still_the_per_operation_timeout_not_the_deadline() -> None:
    def silent(talk: Talk) -> None:
        talk.wait_for_goodbye()

    with slow_server(silent) as (port, _), pytest.raises(MailError) as failed:
        SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=1, deadline=5).send(code_mail())
    assert type(failed.value) is MailError
    assert str(failed.value).endswith("timed out")  # smtplib's words for a read timeout


# --- STARTTLS and implicit TLS ----------------------------------------------------------


@pytest.mark.slow  # waits for the deadline
def test_a_dripping_answer_to_starttls_is_cut_at_the_deadline() -> None:
    def script(talk: Talk) -> None:
        greet_and_ehlo(talk, starttls=True)
        assert talk.command().upper() == "STARTTLS"
        talk.drip("220 2.0.0 Ready to start TLS")

    with slow_server(script) as (port, played):
        cut_at_the_deadline(f"smtp://127.0.0.1:{port}?starttls=1", f"smtp://127.0.0.1:{port}")
    assert played.client_gone


@pytest.mark.slow  # waits for the deadline
def test_a_tls_handshake_stalling_past_the_deadline_is_cut() -> None:
    """Slow (not dripping) answers use up most of the deadline, then the server never starts
    TLS: the handshake's own timeout would end it at about 3.8 s, the deadline does at 3."""

    def script(talk: Talk) -> None:
        time.sleep(0.9)
        talk.say("220 slow.test ESMTP")
        talk.command()
        time.sleep(0.9)
        talk.say("250-slow.test")
        talk.say("250 STARTTLS")
        assert talk.command().upper() == "STARTTLS"
        talk.say("220 2.0.0 Ready to start TLS")
        talk.wait_for_goodbye()

    with slow_server(script) as (port, played):
        cut_at_the_deadline(f"smtp://127.0.0.1:{port}?starttls=1", f"smtp://127.0.0.1:{port}")
    assert played.client_gone


@pytest.mark.slow  # waits for the deadline
def test_a_drip_inside_starttls_is_cut_at_the_deadline(certificate: tuple[Path, Path]) -> None:
    """The connection is cut under the TLS layer STARTTLS put on top of it."""
    context = server_tls(certificate)

    def script(talk: Talk) -> None:
        greet_and_ehlo(talk, starttls=True)
        assert talk.command().upper() == "STARTTLS"
        talk.say("220 2.0.0 Ready to start TLS")
        talk.starttls(context)
        assert talk.command().upper().startswith("EHLO")
        talk.drip("250-slow.test\r\n250-")

    with slow_server(script) as (port, played):
        cut_at_the_deadline(
            f"smtp://127.0.0.1:{port}?starttls=1&verify=0", f"smtp://127.0.0.1:{port}"
        )
    assert played.commands == ["EHLO", "STARTTLS", "EHLO"]
    assert played.client_gone


@pytest.mark.slow  # waits for the deadline
def test_a_drip_over_implicit_tls_is_cut_at_the_deadline(certificate: tuple[Path, Path]) -> None:
    with slow_server(drip_greeting, implicit_tls=server_tls(certificate)) as (port, played):
        cut_at_the_deadline(f"smtps://127.0.0.1:{port}?verify=0", f"smtps://127.0.0.1:{port}")
    assert played.client_gone
    assert played.longest_silence < TIMEOUT


# --- A sane server ----------------------------------------------------------------------


def watchdogs() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "smtp-deadline"]


def test_a_normal_server_still_receives_the_message_and_no_watchdog_is_left() -> None:
    with smtp_server() as (inbox, port):
        threads = threading.active_count()
        sender = SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=TIMEOUT, deadline=DEADLINE)
        started = time.monotonic()
        sender.send(code_mail())
        sender.send(code_mail(to="marie.curie@example.fr"))
        assert time.monotonic() - started < DEADLINE
        assert threading.active_count() == threads
        assert watchdogs() == []
    assert [envelope.rcpt_tos for envelope in inbox.envelopes] == [
        ["jean.dupont@example.fr"],
        ["marie.curie@example.fr"],
    ]
    assert isinstance(inbox.envelopes[0].content, bytes)
    assert CODE.encode() in inbox.envelopes[0].content


@pytest.mark.slow  # waits for the deadline
def test_no_watchdog_is_left_after_a_failed_send() -> None:
    threads = threading.active_count()
    with slow_server(drip_greeting) as (port, _):
        with pytest.raises(MailTimeout):
            SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=TIMEOUT, deadline=1).send(code_mail())
        assert watchdogs() == []
    assert threading.active_count() == threads
