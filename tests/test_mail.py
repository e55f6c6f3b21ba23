"""E-mail: the French messages members receive, and their delivery to a real SMTP server."""

import html as htmllib
import re
import stat
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import Envelope

from cpms_admin.errors import BadAddress, InvalidInput, NotReady
from cpms_admin.mail.transport import (
    FileTransport,
    MailError,
    SmtpTransport,
    check_smtp_url,
    smtp_problem,
    transport_from_settings,
)
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Asker
from tests.mail_helpers import (
    PASSWORD,
    QUOTED,
    SETTINGS,
    USER,
    Inbox,
    check_login,
    code_mail,
    free_port,
    pin_mail,
    server_tls,
    smtp_server,
)
from tests.slow_smtp import Talk, slow_server


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def shown(html: str) -> str:
    """What a mail client displays from an HTML part: tags dropped, entities decoded."""
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


# --- Composition -------------------------------------------------------------------------


def test_security_code_message_tells_the_member_what_to_do() -> None:
    message = code_mail()
    text, html = parts(message)
    assert message["Subject"] == "Votre code de sécurité pour l'Espace Adhérent CPMS"
    assert message["To"] == "Jean Dupont <jean.dupont@example.fr>"
    assert message["From"] == SETTINGS.mail_from
    assert message["Message-ID"].endswith("@cpms.fr>")
    assert message["Date"] == "Thu, 12 Mar 2026 13:22:00 +0000"
    for body in (text, shown(html)):
        assert "Bonjour Monsieur Dupont," in body
        assert "493817" in body
        assert "valable jusqu'à 14 h 32" in body
        assert "https://adherent.cpms.test" in body
        assert "Créez votre mot de passe à 6 chiffres et confirmez-le" in body
        assert "Si vous n'avez pas demandé ce code, ignorez simplement ce message" in body
        assert "Le service Adhérents CPMS" in body


@pytest.mark.parametrize(
    ("asked_by", "says", "if_not_them"),
    [
        ("member", "Vous avez demandé un code de sécurité", "ignorez simplement ce message"),
        ("agent", "votre demande auprès de notre service Adhérents", "contactez notre service"),
        ("cpms", "Le CPMS vous adresse un code de sécurité", None),
    ],
)
@pytest.mark.parametrize(
    ("purpose", "for_what"),
    [
        ("pin_reset", "pour vous connecter à votre Espace Adhérent CPMS et y créer"),
        ("first_login", "pour votre première connexion à votre Espace Adhérent CPMS"),
    ],
)
def test_a_code_e_mail_says_who_asked_for_it(
    asked_by: str, says: str, if_not_them: str | None, purpose: str, for_what: str
) -> None:
    """A first login's code too: it may come from the portal, an agent or a campaign."""
    text, html = parts(code_mail(asked_by=Asker(asked_by), purpose=purpose))
    for body in (text, shown(html)):
        assert says in body and for_what in body
        assert "demandé ce code" not in body or asked_by == "member"
        if if_not_them is None:
            assert "pas à l'origine" not in body and "ignorez" not in body
        else:
            assert if_not_them in body


def test_first_login_code_has_its_own_subject_and_terms_step() -> None:
    message = code_mail(purpose="first_login", civility=None)
    text, _ = parts(message)
    assert "première connexion" in message["Subject"]
    assert "Bonjour Jean Dupont," in text
    assert "Conditions Générales d'Utilisation" in text


@pytest.mark.parametrize(
    ("expires_at", "shown"),
    [
        (datetime(2026, 7, 14, 12, 32, tzinfo=UTC), "jusqu'au 14 juillet 2026 à 14 h 32"),
        (datetime(2026, 3, 12, 23, 5), "jusqu'au 13 mars 2026 à 0 h 05"),  # naive = UTC
        (datetime(2026, 4, 1, 7, 0, tzinfo=UTC), "jusqu'au 1er avril 2026 à 9 h 00"),
    ],
)
def test_expiry_is_shown_in_paris_time_with_the_date_when_not_today(
    expires_at: datetime, shown: str
) -> None:
    text, _ = parts(code_mail(expires_at=expires_at))
    assert f"valable {shown} (heure de Paris)" in text


@pytest.mark.parametrize(
    ("how", "word"), [("set", "créé"), ("changed", "modifié"), ("reset", "réinitialisé")]
)
def test_pin_changed_notice_holds_no_secret_and_says_who_to_call(how: str, word: str) -> None:
    message = pin_mail(how=how)
    text, html = parts(message)
    assert message["Subject"].endswith(f"a été {word}")
    for body in (text, shown(html)):
        assert "Bonjour Madame Dupont," in body
        assert f"a été {word}" in body
        assert "le 12 mars 2026 à 14 h 22" in body
        assert "contactez sans attendre le service clients" in body.lower()
        assert not re.search(r"\d{6}", body)
    assert not re.search(r"\d{6}", html)  # nor in the markup (styles, links)
    assert not re.search(r"\d{6}", message["Subject"])


def test_member_names_print_as_typed_and_are_escaped_in_html() -> None:
    text, html = parts(code_mail(civility=None, first_name="<b>x</b>", last_name="{{ 7*7 }}"))
    assert "Bonjour <b>x</b> {{ 7*7 }}," in text
    assert "Bonjour &lt;b&gt;x&lt;/b&gt; {{ 7*7 }}," in html
    assert "<b>x</b>" not in html


@pytest.mark.parametrize("first", ["Ab" * 38, "Ab" * 50])
def test_names_too_long_for_a_header_line_leave_the_headers_whole(first: str) -> None:
    """Names of 77 and 78 letters without a space (the rules allow 100) were folded with a
    blank line inside the headers: Date, Message-ID and the MIME parts became body text."""
    message = code_mail(civility=None, first_name=first, last_name="Cd" * 50)
    sent = message_from_bytes(message.as_bytes(policy=policy.SMTP), policy=policy.default)
    assert sent["Date"] is not None and sent["Message-ID"] is not None
    assert [a.addr_spec for a in sent["To"].addresses] == [message["To"].addresses[0].addr_spec]
    text, _ = parts(sent)
    assert f"Bonjour {first} {'Cd' * 50}," in text  # the greeting still names the member


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": "jean@example.fr\r\nBcc: everyone@example.com"},
        {"to": "jean@example.fr\nBcc: everyone@example.com"},
        {"first_name": "Jean\r\nBcc: everyone@example.com"},
    ],
)
def test_line_breaks_in_header_values_are_refused(overrides: dict[str, object]) -> None:
    """Refused as an address no server would take: `mail send` gives it up at once."""
    with pytest.raises(BadAddress, match="line break"):
        code_mail(**overrides)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"to": "not-an-address"}, "invalid e-mail address"),
        ({"purpose": "welcome"}, "unknown code purpose"),
        ({"code": "12345"}, "exactly 6 digits"),
    ],
)
def test_malformed_requests_are_refused(overrides: dict[str, object], error: str) -> None:
    with pytest.raises((ValueError, BadAddress), match=error):
        code_mail(**overrides)


# --- Files -------------------------------------------------------------------------------


def test_file_transport_writes_private_parseable_eml_files(tmp_path: Path) -> None:
    outbox = tmp_path / "data" / "outbox"
    transport = transport_from_settings(Settings(mail_dir=str(outbox)))
    assert isinstance(transport, FileTransport)
    transport.send(code_mail())
    transport.send(pin_mail())
    files = sorted(outbox.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]  # no temporary file left behind
    assert all(re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{8}\.eml", f.name) for f in files)
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    first = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert isinstance(first, EmailMessage)
    assert first["To"] == "Jean Dupont <jean.dupont@example.fr>"
    assert "493817" in parts(first)[0]


def test_file_transport_failure_is_a_mail_error(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")
    with pytest.raises(MailError, match=r"^cannot write e-mail to .*outbox: "):
        FileTransport(blocker).send(pin_mail())


# --- SMTP --------------------------------------------------------------------------------


def test_composed_message_arrives_over_plain_smtp() -> None:
    with smtp_server() as (inbox, port):
        SmtpTransport(f"smtp://127.0.0.1:{port}").send(code_mail())
    envelope = inbox.envelopes[0]
    assert envelope.rcpt_tos == ["jean.dupont@example.fr"]
    assert envelope.mail_from == "ne-pas-repondre@cpms.fr"
    received = inbox.only_message()
    assert received["Subject"] == "Votre code de sécurité pour l'Espace Adhérent CPMS"
    assert received.get_content_type() == "multipart/alternative"
    text, html = parts(received)
    assert "493817" in text and "493817" in html


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_login_with_percent_encoded_credentials() -> None:
    with smtp_server(authenticator=check_login, auth_required=True, auth_require_tls=False) as (
        inbox,
        port,
    ):
        SmtpTransport(f"smtp://{QUOTED}@127.0.0.1:{port}").send(pin_mail())
        assert inbox.only_message()["To"] == "Jean Dupont <jean.dupont@example.fr>"
        settings = Settings(smtp_url=f"smtp://{USER.replace('@', '%40')}:wrong@127.0.0.1:{port}")
        problem = smtp_problem(settings)
        assert problem is not None and problem.startswith(
            f"cannot send e-mail via smtp://127.0.0.1:{port}: login refused: server said 535"
        )
        with pytest.raises(MailError, match="login refused") as refused:
            transport_from_settings(settings).send(pin_mail())
        assert "wrong" not in str(refused.value)
    assert len(inbox.envelopes) == 1


def test_starttls_upgrades_before_login(certificate: tuple[Path, Path]) -> None:
    with smtp_server(
        tls_context=server_tls(certificate),
        require_starttls=True,
        authenticator=check_login,
        auth_required=True,
    ) as (inbox, port):
        url = f"smtp://{QUOTED}@127.0.0.1:{port}?starttls=1&verify=0"
        assert smtp_problem(Settings(smtp_url=url)) is None
        SmtpTransport(url).send(code_mail())
        with pytest.raises(MailError, match="server said 530"):  # plain is refused
            SmtpTransport(f"smtp://127.0.0.1:{port}").send(code_mail())
    assert inbox.over_tls == [True]
    assert "493817" in parts(inbox.only_message())[0]


def test_smtps_checks_the_certificate_unless_told_not_to(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(ssl_context=server_tls(certificate)) as (inbox, port):
        with pytest.raises(MailError, match=rf"smtps://127.0.0.1:{port}: TLS certificate refused"):
            SmtpTransport(f"smtps://127.0.0.1:{port}", timeout=5).send(code_mail())
        SmtpTransport(f"smtps://127.0.0.1:{port}?verify=0").send(code_mail())
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust our own test CA
        SmtpTransport(f"smtps://127.0.0.1:{port}").send(pin_mail())
    assert len(inbox.envelopes) == 2


def test_unreachable_server_names_host_and_port_but_not_the_password() -> None:
    port = free_port()  # nothing listens there any more
    with pytest.raises(MailError) as failed:
        SmtpTransport(f"smtp://{QUOTED}@127.0.0.1:{port}", timeout=2).send(code_mail())
    message = str(failed.value)
    assert message.startswith(f"cannot send e-mail via smtp://127.0.0.1:{port}: ")
    assert "refused" in message.lower()
    for secret in (PASSWORD, "p%40ss", "493817"):
        assert secret not in message


class NoSuchUser(Inbox):
    async def handle_RCPT(
        self, server: object, session: object, envelope: Envelope, address: str, options: object
    ) -> str:
        return "550 5.1.1 No such user"


def test_refused_recipient_is_a_mail_error() -> None:
    with (
        smtp_server(NoSuchUser()) as (inbox, port),
        pytest.raises(MailError, match=r"recipient refused, server said 550 5\.1\.1 No such user$"),
    ):
        SmtpTransport(f"smtp://127.0.0.1:{port}").send(code_mail())
    assert inbox.envelopes == []


class QuotesTheAddress(Inbox):
    async def handle_RCPT(
        self, server: object, session: object, envelope: Envelope, address: str, options: object
    ) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected"


def test_a_refusal_quoting_the_address_is_told_without_it() -> None:
    """The reason goes to the audit log (a revoked code's event), which outlives the
    member's address: pseudonymisation blanks the member, not sealed events."""
    with (
        smtp_server(QuotesTheAddress()) as (_, port),
        pytest.raises(MailError) as refused,
    ):
        SmtpTransport(f"smtp://127.0.0.1:{port}").send(code_mail())
    assert str(refused.value) == (
        f"cannot send e-mail via smtp://127.0.0.1:{port}: recipient refused, server said 550 "
        "5.1.1 "
        "<address>: Recipient address rejected"
    )


def garbled_challenge(talk: Talk) -> None:
    talk.say("220 odd.test ESMTP")
    talk.command()  # EHLO
    talk.say("250-odd.test")
    talk.say("250 AUTH CRAM-MD5")
    talk.command()  # AUTH CRAM-MD5
    talk.say("334 abc")  # no base64: smtplib raises binascii.Error
    talk.wait_for_goodbye()


def test_a_login_challenge_that_cannot_be_read_is_a_mail_error_not_a_crash() -> None:
    with (
        slow_server(garbled_challenge) as (port, _),
        pytest.raises(MailError) as failed,
    ):
        SmtpTransport(f"smtp://{QUOTED}@127.0.0.1:{port}").send(code_mail())
    assert str(failed.value) == (
        f"cannot send e-mail via smtp://127.0.0.1:{port}: the server's login challenge cannot "
        "be read"
    )


def test_no_smtp_configured_is_not_a_problem() -> None:
    assert smtp_problem(Settings()) is None


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://u:hunter2@host", "must start with smtp:// or smtps://"),
        ("smtp://u:hunter2@", "no host name"),
        ("smtp://u:hunter2@host?startls=1", "unknown option"),
        ("smtps://u:hunter2@host?starttls=1", "already TLS"),
        ("smtp://u:hunter2@host?starttls=", "starttls must be 1 or 0"),  # not sent in clear
        ("smtp://u:hunter2@host?verify=maybe", "verify must be 1 or 0"),
        ("smtp://u:hunter2@host:99999", "bad port"),
        ("smtp://u:hunter2@host:0", "bad port number"),
        ("smtp://u:hunter%C3%A9@host", "ASCII"),
        ("smtps://u:hunter2@[::1", "a bracket left open"),
        (f"smtp://u:hunter2@{'a' * 300}.com", "no valid name"),
    ],
)
def test_bad_smtp_url_is_refused_without_echoing_it(url: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error) as refused:
        SmtpTransport(url)
    assert "hunter" not in str(refused.value)
    # A setting read at every start: refused before any command changed anything (a typo
    # once failed `pin reset` after it had reset the PIN).
    with pytest.raises(NotReady, match=error) as at_start:
        check_smtp_url(url)
    assert "hunter" not in str(at_start.value)
    assert error in (smtp_problem(Settings(smtp_url=url)) or "")


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("smtp://u:hunter2@mail.example", "smtp://mail.example:25"),
        ("smtp://u:hunter2@mail.example?starttls=1", "smtp://mail.example:587"),
        ("smtps://u:hunter2@mail.example", "smtps://mail.example:465"),
        ("smtps://mail.example:2465", "smtps://mail.example:2465"),
    ],
)
def test_default_ports_and_repr_without_password(url: str, where: str) -> None:
    assert repr(SmtpTransport(url)) == f"SmtpTransport({where!r})"


class OddGoodbye(Inbox):
    async def handle_QUIT(self, server: object, session: object, envelope: Envelope) -> str:
        return "421 4.3.2 shutting down"


def test_an_odd_answer_to_quit_does_not_fail_a_sent_message() -> None:
    """Once the server accepted the message it is sent: the goodbye cannot undo that."""
    with smtp_server(OddGoodbye()) as (inbox, port):
        SmtpTransport(f"smtp://127.0.0.1:{port}").send(code_mail())
    assert len(inbox.envelopes) == 1
