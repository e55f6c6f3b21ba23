"""How a message leaves: a real SMTP server (CPMS_SMTP_URL) or `.eml` files (CPMS_MAIL_DIR).

`CPMS_SMTP_URL` forms:

- `smtp://user:pass@host:port` plain SMTP (default port 25), login when a user is given;
- `smtp://user:pass@host?starttls=1` upgraded with STARTTLS (default port 587);
- `smtps://user:pass@host` implicit TLS (default port 465).

User and password are percent-decoded (`%40` for `@`). `?verify=0` turns off certificate and
host name checks: only for test servers with a self-signed certificate, never in production.
Messages of `MailError` never contain the password nor the message (which may hold a code).

smtplib's `timeout` bounds each socket operation only: a server dripping one byte every few
seconds keeps a send going forever. Each SMTP session therefore also has an overall deadline
(`CPMS_SMTP_DEADLINE_SECONDS`), enforced by a watchdog that cuts the connection; see `_Watchdog`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from cpms_admin.db import sqlite_path
from cpms_admin.english import noun
from cpms_admin.errors import InvalidInput, MailError, MailTimeout, NotReady
from cpms_admin.private_files import private_dir, write_private_atomically
from cpms_admin.settings import Settings, written_as

if TYPE_CHECKING:
    import smtplib
    import socket
    import ssl
    import threading

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# Why an e-mail did not leave: its last error (the member's dossier words it in French).
CANNOT_SEND = "cannot send e-mail via {}: {}"
CANNOT_WRITE = "cannot write e-mail to {}: {}"
NO_ANSWER = "no complete answer within {} s (deadline)"
SERVER_SAID = "server said {} {}"
RECIPIENT_REFUSED = "recipient refused, {}"
LOGIN_REFUSED = "login refused: {}"
CERTIFICATE_REFUSED = "TLS certificate refused ({})"
TLS_FAILED = "TLS failed ({})"
NO_ANSWER_IN = "no answer within {} s"
GARBLED_CHALLENGE = "the server's login challenge cannot be read"
_ADDRESS = re.compile(r"<?[^\s<>]+@[^\s<>]+>?")


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None: ...


@dataclass(frozen=True)
class _SmtpConfig:
    scheme: str
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    starttls: bool
    verify: bool

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _invalid(why: str) -> InvalidInput:
    """The SMTP URL refused, named as the operator set it (the variable or the config file)."""
    return InvalidInput(f"invalid {written_as('smtp_url')}: {why}")


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = _FLAGS.get(query[name][-1].lower())
    if value is None:
        raise _invalid(f"{name} must be 1 or 0")
    return value


def parse_smtp_url(url: str) -> _SmtpConfig:
    """Parse CPMS_SMTP_URL; errors never echo the URL, which may hold the password."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # `smtp://[::1`: a bracket left open
        raise _invalid("not a URL (a bracket left open?)") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise _invalid("it must start with smtp:// or smtps://")
    if not host:
        raise _invalid("no host name")
    try:
        host.encode("idna")  # what connecting does with it
    except UnicodeError:
        raise _invalid("the host is no valid name (a label over 63 characters?)") from None
    # Blank values kept: `?starttls=` must be refused, not read as no option (sent in clear).
    query = parse_qs(parts.query, keep_blank_values=True)
    # A typo such as `?startls=1` must not silently send in clear.
    unknown = set(query) - {"starttls", "verify"}
    if unknown:
        raise _invalid(f"unknown {noun(len(unknown), 'option')} {', '.join(sorted(unknown))}")
    starttls = _flag(query, "starttls", False)
    if starttls and parts.scheme == "smtps":
        raise _invalid("smtps:// is already TLS, drop ?starttls=1")
    try:
        port = parts.port
    except ValueError:
        raise _invalid("bad port number") from None
    if port == 0:
        raise _invalid("bad port number (0)")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if not (user or "").isascii() or not (password or "").isascii():
        raise _invalid("smtplib logs in with ASCII credentials only")
    default_port = _DEFAULT_PORTS["smtp+starttls" if starttls else parts.scheme]
    return _SmtpConfig(
        scheme=parts.scheme,
        host=host,
        port=port or default_port,
        user=user,
        password=password,
        starttls=starttls,
        verify=_flag(query, "verify", True),
    )


def _server_said(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return SERVER_SAID.format(code, text)


def _reason(exc: BaseException, *, timeout: float) -> str:
    """One short line saying why, from whatever smtplib, ssl or the socket raised."""
    import smtplib
    import ssl

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (0, b""))
        reason = RECIPIENT_REFUSED.format(_server_said(code, reply))
    elif isinstance(exc, smtplib.SMTPResponseException):
        reason = _server_said(exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reason = LOGIN_REFUSED.format(reason)
    elif isinstance(exc, ssl.SSLCertVerificationError):
        reason = CERTIFICATE_REFUSED.format(exc.verify_message)
    elif isinstance(exc, ssl.SSLError):
        reason = TLS_FAILED.format(exc.reason or exc)
    elif isinstance(exc, TimeoutError):
        reason = NO_ANSWER_IN.format(f"{timeout:g}")
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = str(exc) or type(exc).__name__
    # A server's reply often quotes the recipient: the reason goes to the audit log, which
    # outlives the member's address (pseudonymisation, README "Retention").
    return _ADDRESS.sub("<address>", " ".join(reason.split()))[:200]


class _Watchdog:
    """The overall deadline of one SMTP session.

    Socket timeouts cannot bound a session (each byte of a slow drip resets them), and
    smtplib offers no hook between reads. So, right after the TCP connection is made, a
    daemon timer is armed for the time left; if it fires, it shuts the connection down at
    the OS level through a duplicate of its file descriptor. Every blocked or later read
    then sees end-of-file and every write fails, in plain SMTP as through the TLS layer that
    STARTTLS or smtps wrap around the same descriptor, and smtplib gives up at once.
    The duplicate is taken when arming, so the timer never touches a descriptor number that
    smtplib may have closed and the system reused meanwhile.
    """

    def __init__(self, seconds: float) -> None:
        import threading
        import time

        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._connection: socket.socket | None = None  # the duplicate, ours to close
        self.expired = False

    def remaining(self) -> float:
        import time

        return max(0.0, self._ends - time.monotonic())

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """`socket.create_connection`, but no attempt outlives the deadline; armed on success."""
        import socket

        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, 0, socket.SOCK_STREAM
        ):
            if self.remaining() <= 0:
                break
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(min(timeout, self.remaining()))
                sock.connect(address)
                sock.settimeout(timeout)  # from now on the per-operation timeout
                self._arm(sock)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        if self.remaining() <= 0:
            self.expired = True
            raise TimeoutError("deadline")
        raise error or OSError(f"no address for {host}")

    def _arm(self, sock: socket.socket) -> None:
        import os
        import socket
        import threading

        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._connection = duplicate
            self._timer = threading.Timer(self.remaining(), self._fire)
            self._timer.name = "smtp-deadline"
            self._timer.daemon = True  # never keeps the CLI alive
            self._timer.start()

    def _fire(self) -> None:
        import socket

        with self._lock:
            if self._connection is None:  # disarmed meanwhile
                return
            self.expired = True
            with suppress(OSError):  # already gone: nothing left to cut
                self._connection.shutdown(socket.SHUT_RDWR)
            self._connection.close()
            self._connection = None

    def disarm(self) -> None:
        """Stop the timer and wait for its thread: no thread outlives the session."""
        with self._lock:
            timer, self._timer = self._timer, None
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        if timer is not None:
            timer.cancel()
            timer.join()


def _connect(
    config: _SmtpConfig, *, timeout: float, context: ssl.SSLContext | None, watchdog: _Watchdog
) -> smtplib.SMTP:
    """smtplib's client with its TCP connection made and watched by `watchdog`.

    `_get_socket` is smtplib's one place where SMTP and SMTP_SSL open the socket, before the
    greeting is read; overriding it arms the watchdog first, so SMTP_SSL's handshake, like
    everything after, already runs under watch. `getreply` refuses any reply read once the
    deadline fired: the cut ends a read mid-line, and smtplib would take the truncated line
    (`250 2.0.0 que`) for a whole reply, a message never acknowledged for one accepted.
    The classes live here for the lazy import of smtplib.
    """
    import smtplib

    class WatchedSMTP(smtplib.SMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            return watchdog.connect(host, port, timeout)

        def getreply(self) -> tuple[int, bytes]:
            reply = super().getreply()
            if watchdog.expired:
                self.close()
                raise smtplib.SMTPServerDisconnected("deadline")
            return reply

    class WatchedSMTPSSL(WatchedSMTP, smtplib.SMTP_SSL):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            sock = super()._get_socket(host, port, timeout)  # plain TCP, already watched
            try:
                return self.context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise

    if config.scheme == "smtps":
        return WatchedSMTPSSL(config.host, config.port, timeout=timeout, context=context)
    return WatchedSMTP(config.host, config.port, timeout=timeout)


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """`smtp.login`, where a challenge that is not base64 (binascii.Error, a ValueError) is
    the server's failure like any other, not a crash."""
    import smtplib

    try:
        smtp.login(user, password)
    except ValueError:
        raise smtplib.SMTPException(GARBLED_CHALLENGE) from None


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye, ignoring the answer: once the message is accepted it is sent, and an
    odd reply to QUIT (which `with smtp:` would raise) must not make it look failed."""
    import smtplib

    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class SmtpTransport:
    """Send through the SMTP server named by CPMS_SMTP_URL, one connection per call."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = Settings.smtp_timeout_seconds,
        deadline: float = Settings.smtp_deadline_seconds,
    ) -> None:
        """`timeout` bounds each network operation, `deadline` the whole session (seconds)."""
        if timeout <= 0 or deadline <= 0:
            raise ValueError("SMTP timeout and deadline must be positive")
        self._config = parse_smtp_url(url)
        self._timeout = timeout
        self._deadline = deadline

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> SmtpTransport:
        return cls(
            url, timeout=settings.smtp_timeout_seconds, deadline=settings.smtp_deadline_seconds
        )

    def __repr__(self) -> str:
        return f"SmtpTransport({self._config.where!r})"

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        context = ssl.create_default_context()
        if not self._config.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """Connected, upgraded to TLS and logged in as configured, all of it (and what the
        caller does with it, and QUIT) within the deadline; any failure is a MailError, and a
        MailTimeout when the deadline cut it short."""
        import smtplib

        config = self._config
        watchdog = _Watchdog(self._deadline)
        try:
            try:
                implicit_tls = self._tls_context() if config.scheme == "smtps" else None
                smtp = _connect(
                    config, timeout=self._timeout, context=implicit_tls, watchdog=watchdog
                )
                try:
                    smtp.ehlo()
                    if config.starttls:
                        smtp.starttls(context=self._tls_context())
                        smtp.ehlo()
                    if config.user is not None:
                        _login(smtp, config.user, config.password or "")
                    yield smtp
                finally:
                    _quit(smtp)
            finally:
                watchdog.disarm()
        except (smtplib.SMTPException, OSError) as exc:
            if watchdog.expired:
                # Whatever smtplib made of the cut connection (EOF, reset, TLS error), the cause
                # is the deadline; the caller may stop a whole run on this one.
                raise MailTimeout(
                    CANNOT_SEND.format(config.where, NO_ANSWER.format(f"{self._deadline:g}"))
                ) from None
            reason = _reason(exc, timeout=self._timeout)
            if config.password:
                reason = reason.replace(config.password, "***")
            raise MailError(CANNOT_SEND.format(config.where, reason)) from None

    def send(self, message: EmailMessage) -> None:
        import smtplib

        with self._session() as smtp:
            refused = smtp.send_message(message)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)

    def check(self) -> None:
        """Connect, upgrade and log in without sending anything (for `doctor`)."""
        with self._session():
            pass


class FileTransport:
    """Write each message as an `.eml` file: the embedded default, without any mail server."""

    def __init__(self, directory: Path, *, like: Path | None = None) -> None:
        self.directory = directory
        self.like = like  # the database file, whose group bits a new outbox takes

    def __repr__(self) -> str:
        return f"FileTransport({str(self.directory)!r})"

    def send(self, message: EmailMessage) -> None:
        """Readers polling the directory never see half a message (written aside, then
        renamed), nor one anybody else can read (0600). The directory, when made here, is
        the database file's owner and group (0700, or 0770 for a group of agents): every
        agent of the database writes there, and `purge` deletes what they wrote."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{secrets.token_hex(4)}.eml"
        try:
            folder = private_dir(self.directory, like=self.like)
            with write_private_atomically(folder / name, new_name=True) as out:
                out.write(message.as_bytes())
        except InvalidInput as exc:  # a link, or a directory another user controls
            raise MailError(CANNOT_WRITE.format(self.directory, exc)) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise MailError(CANNOT_WRITE.format(self.directory, reason)) from None


def transport_from_settings(settings: Settings) -> Transport:
    """SMTP when CPMS_SMTP_URL is set, else `.eml` files in CPMS_MAIL_DIR."""
    if settings.smtp_url:
        return SmtpTransport.from_settings(settings.smtp_url, settings)
    return FileTransport(settings.outbox, like=sqlite_path(settings.database_url))


def check_smtp_url(url: str | None) -> None:
    """CPMS_SMTP_URL read as sending reads it, as every command starts (NotReady, exit 5):
    found only when a code was sent, a typo failed `pin reset` after it had reset the PIN."""
    if url is not None:
        try:
            parse_smtp_url(url)
        except InvalidInput as exc:
            raise NotReady(str(exc)) from None


def smtp_problem(settings: Settings) -> str | None:
    """Why the configured SMTP server cannot be used, or None (also when none is configured)."""
    if not settings.smtp_url:
        return None
    try:
        SmtpTransport.from_settings(settings.smtp_url, settings).check()
    except (InvalidInput, MailError) as exc:
        return str(exc)
    return None
