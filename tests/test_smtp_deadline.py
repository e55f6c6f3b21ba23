"""SMTP sessions end within their overall deadline, however slowly the server drips bytes.

The slow servers here are real sockets on 127.0.0.1 playing a short script. Each byte comes
well within the per-operation timeout, so only the deadline can stop the client. Every server
stops by itself: it serves one connection, lives at most `LIFETIME` seconds and gives up as
soon as the client has gone.
"""

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cpms_admin.mail import transport
from cpms_admin.mail.transport import MailError, MailTimeout, SmtpTransport
from cpms_admin.settings import Settings
from tests import test_mail
from tests.test_mail import PASSWORD, QUOTED, code_mail, server_tls, smtp_server

certificate = test_mail.certificate  # the fixture: a self-signed certificate for 127.0.0.1

TIMEOUT, DEADLINE = 2.0, 3.0  # per operation, per session
DRIP = 0.5  # seconds between two bytes: far below TIMEOUT
LIFETIME = 15.0  # no slow server outlives this, whatever the client does
CODE = "493817"  # the code in code_mail(): must never show in an error


@dataclass
class Played:
    """What a slow server saw, for the test to check once the server thread ended."""

    longest_silence: float = 0.0  # between two bytes the server sent while dripping
    client_gone: bool = False  # the client closed or cut the connection
    commands: list[str] = field(default_factory=list)


class Talk:
    """One server-side SMTP conversation, line by line, on a plain or TLS socket."""

    def __init__(self, sock: socket.socket, played: Played) -> None:
        self.sock = sock
        self.played = played
        self.ends = time.monotonic() + LIFETIME
        self._buffer = b""

    def say(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def hear(self) -> str:
        """The next line, without its CRLF; the script ends if the client has gone."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionAbortedError("the client has gone")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii", "replace").rstrip("\r")

    def command(self) -> str:
        """The next command line, noted in `played.commands` by its verb."""
        line = self.hear()
        self.played.commands.append(line.split(" ", 1)[0].upper())
        return line

    def take_message(self) -> None:
        """After `354`: read the message up to its lone dot."""
        while self.hear() != ".":
            pass
        self.played.commands.append(".")

    def drip(self, start: str) -> None:
        """Send `start`, then endless padding, one byte every DRIP seconds, never ending the
        reply: until the client goes away (or LIFETIME, so that the test cannot hang)."""
        data = start.encode()
        sent, last = 0, time.monotonic()
        while time.monotonic() < self.ends:
            byte = data[sent : sent + 1] or b"."
            try:
                self.sock.sendall(byte)
            except OSError:
                self.played.client_gone = True
                return
            now = time.monotonic()
            self.played.longest_silence = max(self.played.longest_silence, now - last)
            sent, last = sent + 1, now
            time.sleep(DRIP)

    def wait_for_goodbye(self) -> None:
        """Say nothing more; drain whatever comes until the client has gone."""
        while time.monotonic() < self.ends:
            if not self.sock.recv(4096):
                self.played.client_gone = True
                return

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_side=True)


Script = Callable[[Talk], None]


@contextmanager
def slow_server(
    script: Script, *, implicit_tls: ssl.SSLContext | None = None
) -> Iterator[tuple[int, Played]]:
    """A one-connection server on 127.0.0.1 playing `script`: (port, what it saw)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LIFETIME)
    port: int = listener.getsockname()[1]
    played = Played()

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # nobody came, or the test is over
        connection.settimeout(LIFETIME)
        talk = Talk(connection, played)
        try:
            if implicit_tls is not None:
                talk.starttls(implicit_tls)
            script(talk)
        except OSError:
            played.client_gone = True  # reset, TLS alert, broken pipe: the client went
        finally:
            talk.sock.close()
            connection.close()

    thread = threading.Thread(target=serve, name="slow-smtp", daemon=True)
    thread.start()
    try:
        yield port, played
    finally:
        listener.close()
        thread.join(LIFETIME + 1)
        assert not thread.is_alive()


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
    settings = Settings(smtp_url="smtp://127.0.0.1:25", smtp_deadline_seconds=7)
    chosen = transport.transport_from_settings(settings)
    assert isinstance(chosen, SmtpTransport) and chosen._deadline == 7
    assert SmtpTransport("smtp://127.0.0.1:25")._deadline == Settings().smtp_deadline_seconds
    assert issubclass(MailTimeout, MailError)
    with pytest.raises(ValueError, match="positive"):
        SmtpTransport("smtp://127.0.0.1:25", deadline=0)


# --- Slow drips in plain SMTP -----------------------------------------------------------


def drip_greeting(talk: Talk) -> None:
    talk.drip("220 slow.test ESMTP")


def drip_ehlo_reply(talk: Talk) -> None:
    talk.say("220 slow.test ESMTP")
    talk.command()
    talk.drip("250-slow.test\r\n250-PIPELINING\r\n250-")


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


def test_a_dripping_answer_to_starttls_is_cut_at_the_deadline() -> None:
    def script(talk: Talk) -> None:
        greet_and_ehlo(talk, starttls=True)
        assert talk.command().upper() == "STARTTLS"
        talk.drip("220 2.0.0 Ready to start TLS")

    with slow_server(script) as (port, played):
        cut_at_the_deadline(f"smtp://127.0.0.1:{port}?starttls=1", f"smtp://127.0.0.1:{port}")
    assert played.client_gone


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


def test_no_watchdog_is_left_after_a_failed_send() -> None:
    threads = threading.active_count()
    with slow_server(drip_greeting) as (port, _):
        with pytest.raises(MailTimeout):
            SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=TIMEOUT, deadline=1).send(code_mail())
        assert watchdogs() == []
    assert threading.active_count() == threads
