"""Helpers for the e-mail tests: the messages members receive, a real SMTP server on loopback
(aiosmtpd) keeping what it received, and a self-signed certificate for its TLS."""

import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from cpms_admin.mail.compose import pin_changed_message, security_code_message
from cpms_admin.settings import Settings

SETTINGS = Settings(portal_url="https://adherent.cpms.test")
USER, PASSWORD = "agent@cpms.fr", "p@ss:w/rd%"
QUOTED = "agent%40cpms.fr:p%40ss%3Aw%2Frd%25"  # USER:PASSWORD percent-encoded for the URL
NOW = datetime(2026, 3, 12, 13, 22, tzinfo=UTC)  # 14 h 22 in Paris (winter time)
CODE = "493817"  # the code in code_mail()


# --- Messages ------------------------------------------------------------------------------


def code_mail(**overrides: object) -> EmailMessage:
    """A security code e-mail to Jean Dupont, valid 10 minutes from NOW."""
    values: dict[str, object] = {
        "settings": SETTINGS,
        "to": "jean.dupont@example.fr",
        "first_name": "Jean",
        "last_name": "Dupont",
        "civility": "M",
        "code": CODE,
        "expires_at": NOW + timedelta(minutes=10),
        "purpose": "pin_reset",
        "now": NOW,
    }
    values.update(overrides)
    return security_code_message(**values)  # type: ignore[arg-type]


def pin_mail(**overrides: object) -> EmailMessage:
    """The notice that Madame Dupont's PIN was changed at NOW."""
    values: dict[str, object] = {
        "settings": SETTINGS,
        "to": "jean.dupont@example.fr",
        "first_name": "Jean",
        "last_name": "Dupont",
        "civility": "MME",
        "changed_at": NOW,
        "how": "changed",
    }
    values.update(overrides)
    return pin_changed_message(**values)  # type: ignore[arg-type]


# --- A real SMTP server ----------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping what it received."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.over_tls: list[bool] = []

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.over_tls.append(getattr(session, "ssl", None) is not None)
        return "250 OK"

    def only_message(self) -> EmailMessage:
        assert len(self.envelopes) == 1
        content = self.envelopes[0].content
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


def free_port() -> int:
    """A port nothing listens on (any more) on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_login(
    server: object, session: object, envelope: object, mechanism: str, auth_data: object
) -> AuthResult:
    """aiosmtpd authenticator accepting USER with PASSWORD only."""
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@contextmanager
def smtp_server(handler: Inbox | None = None, **options: Any) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 for the `with` block: (what it received, its port)."""
    inbox, port = handler or Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# --- TLS -------------------------------------------------------------------------------------


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 in `folder`: (cert.pem, key.pem)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        _certificate_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("need the cryptography package or the openssl command to make a cert")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return cert, key


def _certificate_with_cryptography(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The server side of TLS with `certificate`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context
