"""`member dossier`: everything held on a member, as JSON or PDF, for their right of access;
never a secret (no code, no hash), owner-only, never over a file unless forced, audited."""

import inspect
import json
import re
import stat
from pathlib import Path
from typing import Any

import pypdf
import pytest
from sqlmodel import Session, col, select

from cpms_admin.cli.commands import letters as letters_cli
from cpms_admin.letters.claim import NEWER_CODE_SINCE
from cpms_admin.letters.returns import RETURNED_BY_POST, RETURNED_ON
from cpms_admin.letters.voiding import SUPERSEDED_WHILE_PRINTING
from cpms_admin.mail.transport import CANNOT_SEND, RECIPIENT_REFUSED
from cpms_admin.models import Account, SecurityCode
from cpms_admin.privacy.dossier_pdf import LABELS, SYSTEM_REASONS, french_reason
from cpms_admin.vocabulary import PortalReason, RevokeReason
from tests.audit_helpers import audit_of
from tests.cred_helpers import NEW_PIN, PIN, mailed_codes
from tests.harness import Cli, FakeClock
from tests.letters_helpers import batch, printed_codes
from tests.mail_helpers import free_port
from tests.retention_helpers import add_member

KEYS = {"generated_at", "member", "account", "codes", "letters", "emails", "audit_events"}


def member_with_a_story(cli: Cli, clock: FakeClock, tmp_path: Path) -> tuple[str, list[str]]:
    """A member whose welcome letter was printed and used, who then got a code by e-mail
    and changed their PIN with it; the NIR, and every code they were given."""
    nir = add_member(cli, "Lefèvre", "--email", "zoe.lefevre@example.org")
    summary = batch(cli, tmp_path / "print")
    (letter_code,) = printed_codes(summary).values()
    stdin = f"{letter_code}\n{PIN}\n{PIN}\n"
    assert cli("portal", "set-pin", nir, "--with", "code", input=stdin).exit_code == 0
    clock.advance(days=2)
    assert cli("code", "issue", nir, "--channel", "email", "--reason", "appel").exit_code == 0
    (mail_code,) = mailed_codes(cli.settings)
    stdin = f"{mail_code}\n{NEW_PIN}\n{NEW_PIN}\n"
    assert cli("portal", "set-pin", nir, "--with", "code", input=stdin).exit_code == 0
    cli("portal", "login", nir, input="000000\n")  # a wrong PIN
    return nir, [letter_code, mail_code]


def secrets_of(session: Session) -> list[str]:
    """Every hash stored: PINs and codes."""
    session.rollback()
    pins = [a.pin_hash for a in session.exec(select(Account)) if a.pin_hash]
    codes = [c.code_hash for c in session.exec(select(SecurityCode).order_by(col(SecurityCode.id)))]
    assert pins and len(codes) == 2
    return pins + codes


def test_the_json_dossier_holds_everything_and_no_secret(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    nir, codes = member_with_a_story(cli, clock, tmp_path)
    out = tmp_path / "dossier.json"
    result = cli("--json", "member", "dossier", nir, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "nir": nir, "out": str(out), "format": "json", "codes": 2, "letters": 1, "emails": 0,
        "audit_events": 5,
    }  # fmt: skip
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text(encoding="utf-8")
    for secret in [*codes, *secrets_of(session)]:
        assert secret not in text
    runner = json.loads(cli("--json", "agent", "list").stdout)[0]["name"]  # who ran them
    for name in ("agent.test", runner):  # who acted is the portal or CPMS, not an agent
        assert f'"{name}"' not in text
    dossier: dict[str, Any] = json.loads(text)
    assert set(dossier) == KEYS | {"retention"}
    assert dossier["generated_at"] == "2026-11-25T09:00:00+00:00"
    assert dossier["member"]["last_name"] == "Lefèvre" and dossier["member"]["nir"] == nir
    assert dossier["member"]["address"]["lines"] == ["Anne LEFÈVRE", "4 RUE SALA", "69002 LYON"]
    assert (dossier["account"]["pin_set"], dossier["account"]["failed_attempts"]) == (True, 1)
    assert [(c["channel"], c["state"], c["requested_by"]) for c in dossier["codes"]] == [
        ("post", "used", None),
        ("email", "used", "cpms"),
    ]
    assert set(dossier["codes"][0]) == {
        "id", "purpose", "channel", "state", "revoked_reason", "created_at", "expires_at",
        "used_at", "failed_tries", "letter_id", "requested_by",
    }  # fmt: skip
    (letter,) = dossier["letters"]
    assert (letter["kind"], letter["status"], letter["batch_id"]) == ("welcome", "printed", 1)
    assert letter["printed_at"] == "2026-11-23T09:00:00+00:00"
    story = audit_of(cli, nir)
    assert [e["id"] for e in dossier["audit_events"]] == [e["id"] for e in story[:-1]]
    assert [(e["action"], e["by"]) for e in dossier["audit_events"]] == [
        ("member.add", "cpms"),
        ("portal.set_pin", "portal"),
        ("code.issue", "cpms"),
        ("portal.set_pin", "portal"),
        ("portal.login", "portal"),
    ]
    assert dossier["audit_events"][2]["reason"] == "appel"
    # Audited: the format, not the content.
    assert story[-1]["action"] == "member.dossier"
    assert story[-1]["details"] == {"format": "json"}
    assert (story[-1]["agent"], story[-1]["label"]) == (runner, "agent.test")


def test_every_refusal_of_the_portal_reads_in_french() -> None:
    """A refused attempt's outcome is the portal's reason; the dossier words each one (those
    the story below does not reach too). `unknown_member` names no member."""
    refusals = set(PortalReason) - {PortalReason.unknown_member}
    assert refusals - set(LABELS["outcome"]) == set()


def test_why_a_code_was_revoked_reads_in_french() -> None:
    assert set(RevokeReason) - set(LABELS["revoked"]) == set()


def test_what_the_program_writes_as_a_reason_reads_in_french() -> None:
    """A letter's status reason, the program's own events' reasons, why an address is
    flagged: in the agents' English in the database, in French in the member's dossier."""
    for english, _ in SYSTEM_REASONS:
        written = english.format(*["12"] * english.count("{}"))
        french = french_reason(written)
        assert not re.search(r"\b(the|letter|member|address|by|its|was)\b", french), french
    assert french_reason("superseded by letter #39") == "remplacé par le courrier n° 39"
    assert french_reason(SUPERSEDED_WHILE_PRINTING).startswith(
        "son code de sécurité a été remplacé"
    )
    assert french_reason("appel du 06/12") == "appel du 06/12"  # an agent's words, as typed
    # An e-mail's failure: the program's words, around the mail server's own.
    refused = CANNOT_SEND.format("smtp://mx:587", RECIPIENT_REFUSED.format("server said 550 x"))
    assert french_reason(refused) == (
        "envoi impossible par le serveur de messagerie smtp://mx:587 : destinataire refusé, "
        "le serveur a répondu 550 x"
    )
    typed = RETURNED_ON.format("2026-12-06 09:00 CET", "member closed")  # an agent's words
    assert french_reason(typed) == "le 6 décembre 2026 à 9 h 00 : member closed"
    said = CANNOT_SEND.format("smtp://mx:25", "server said 421 Connection refused")
    assert french_reason(said).endswith("le serveur a répondu 421 Connection refused")  # its own
    assert french_reason(NEWER_CODE_SINCE.format("2026-03-01 09:05 CET")) == (
        "un code de sécurité plus récent a été émis le 1er mars 2026 à 9 h 05"
    )
    cli_default = inspect.signature(letters_cli.returned).parameters["reason"].default
    assert cli_default == RETURNED_BY_POST  # spelt again there, to keep the CLI's start light


@pytest.mark.slow  # renders a PDF
def test_the_pdf_dossier_reads_in_french_and_holds_no_secret(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    nir, codes = member_with_a_story(cli, clock, tmp_path)
    assert cli("letters", "returned", "1").exit_code == 0  # reasons the program writes itself
    out = tmp_path / "dossier.PDF"
    result = cli("member", "dossier", nir, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Dossier of {nir[0]} {nir[1:3]} {nir[3:5]} {nir[5:7]} {nir[7:10]} {nir[10:13]} "
        f"{nir[13:]} written to {out} (pdf: 2 codes, 1 letter, 6 events).\n"
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(out).pages)
    squeezed = text.replace(" ", "").replace("\n", "")
    words_of = " ".join(text.split())  # table cells wrap their lines
    for secret in [*codes, *secrets_of(session)]:
        assert secret not in text and secret not in squeezed
    assert "agent.test" not in text
    for words in ("Vos données personnelles", "Lefèvre", "zoe.lefevre@example.org",
                  "Codes de sécurité", "courrier de bienvenue",
                  "revenu (n'habite pas à l'adresse indiquée)",
                  "création du code personnel", "vous (Espace Adhérent)",
                  "23 novembre 2026 à 10 h 00", "n° du courrier de bienvenue : 1",
                  "comment : création avec un code de sécurité", "code personnel erroné",
                  "envoi : e-mail ; valable jusqu'au : 25 novembre 2026 à 10 h 10",
                  "courrier revenu NPAI : retourné par La Poste",
                  "courrier utilisé 23 décembre 2026 inclus",  # as its letter says it
                  "(le 25 novembre 2026 à 10 h 00 : NPAI", "(le courrier n° 1 est revenu : NPAI"
                  ):  # fmt: skip
        assert words in words_of, words
    assert re.findall(r"\b[a-z]+_[a-z_]+\b", text) == []  # no key or word left in English
    assert audit_of(cli, nir)[-1]["details"] == {"format": "pdf"}


@pytest.mark.slow  # renders a PDF
def test_why_an_e_mail_did_not_leave_reads_in_french_in_the_pdf_dossier(
    cli: Cli, tmp_path: Path
) -> None:
    """The program's words around a mail server's own, in a revoked code's event and in a
    queued e-mail's last error."""
    nir = add_member(cli, "Girard", "--email", "anne.girard@example.org", "--no-welcome")
    dead = cli.with_settings(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    assert dead("code", "issue", nir, "--channel", "email", "--reason", "appel").exit_code == 1
    campaign = ("code", "campaign", "--no-pin", "--channel", "email", "--reason", "rentrée")
    assert cli(*campaign).exit_code == 0
    assert "1 to retry" in dead("mail", "send").stdout  # its last error kept
    out = tmp_path / "dossier.pdf"
    assert cli("member", "dossier", nir, "--out", str(out)).exit_code == 0
    text = " ".join(" ".join(page.extract_text() for page in pypdf.PdfReader(out).pages).split())
    # The two codes revoked (`code issue`'s, the campaign e-mail's), the e-mail to retry.
    assert text.count("envoi impossible par le serveur de messagerie smtp://") == 3
    assert "cannot send" not in text and "Connection refused" not in text  # the system's
    assert text.count("connexion refusée") == 3
    assert "annulé : l'e-mail n'a pas pu être envoyé" in text  # `code issue`'s code


@pytest.mark.slow  # renders a PDF
def test_a_long_word_in_the_pdf_dossier_wraps_instead_of_leaving_the_page(
    cli: Cli, tmp_path: Path
) -> None:
    """A name of 100 letters and a closing reason of 500 without a space ran off the page's
    edge, with the history table's last columns: data the member has a right to, not shown."""
    name = ("Wolfeschlegelsteinhausenbergerdorff" * 3)[:100]
    nir = add_member(cli, name, "--envelope-name", "A WOLFE")
    reason = "X" * 500
    assert cli("member", "close", nir, "--reason", reason).exit_code == 0
    out = tmp_path / "dossier.pdf"
    assert cli("member", "dossier", nir, "--out", str(out)).exit_code == 0
    beyond = []  # text whose line runs past the page's edge (its width estimated generously)
    for page in pypdf.PdfReader(out).pages:
        width = float(page.mediabox.width)

        def visit(text: str, cm: list[float], tm: list[float], _font: object, size: float) -> None:
            x, scale = cm[0] * tm[4] + cm[2] * tm[5] + cm[4], tm[0] * cm[0]
            for line in text.splitlines():
                if x + 0.5 * size * scale * len(line.rstrip()) > 1.25 * width:
                    beyond.append(line[:20])

        page.extract_text(visitor_text=visit)
    assert beyond == []


def test_an_existing_file_is_replaced_only_with_force(
    cli: Cli, tmp_path: Path, clock: FakeClock
) -> None:
    nir = add_member(cli, "Martin")
    out = tmp_path / "dossier.json"
    out.write_text("keep me")
    refused = cli("member", "dossier", nir, "--out", str(out))
    assert refused.exit_code == 4
    assert refused.stderr == (
        f"Error: {out} already exists: give --force to replace it, or another name\n"
    )
    assert out.read_text() == "keep me"
    assert [e["action"] for e in audit_of(cli, nir)] == ["member.add"]
    forced = cli("member", "dossier", nir, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads(out.read_text())["member"]["last_name"] == "Martin"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_link_at_the_file_name_is_never_written_through(cli: Cli, tmp_path: Path) -> None:
    nir = add_member(cli, "Martin")
    target = tmp_path / "theirs.json"
    target.write_text("theirs")
    link = tmp_path / "dossier.json"
    link.symlink_to(target)
    result = cli("member", "dossier", nir, "--out", str(link), "--force")
    assert result.exit_code == 2
    assert "is a symbolic link; refusing to replace it" in result.stderr
    assert target.read_text() == "theirs" and link.is_symlink()
    assert [e["action"] for e in audit_of(cli, nir)] == ["member.add"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["185057800608491", "--out", "d.json"], 3, "no member with NIR 1 85 05 78 006 084 91"),
        (["185057800608492", "--out", "d.json"], 2, "invalid NIR '185057800608492'"),
        (
            ["185057800608491", "--out", "d.txt"],
            2,
            "the suffix of 'd.txt' is not a dossier format: give --format json or pdf",
        ),
        (
            ["185057800608491", "--out", "d.json", "--format", "xml"],
            2,
            "--format 'xml' is not a dossier format: give --format json or pdf",
        ),
        (
            ["185057800608491", "--out", "."],
            2,
            ". is a directory: give the dossier's file, e.g. ./NIR.pdf",
        ),
    ],
    ids=["unknown", "bad-key", "suffix", "format", "directory"],
)
def test_refusals(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int,
    message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = cli("member", "dossier", *args)
    assert result.exit_code == code
    assert result.stderr.startswith(f"Error: {message}")
    assert not (tmp_path / "d.json").exists()


def test_the_format_option_wins_over_the_suffix(cli: Cli, tmp_path: Path) -> None:
    nir = add_member(cli, "Martin")
    out = tmp_path / "dossier.txt"
    assert cli("member", "dossier", nir, "--out", str(out), "--format", "json").exit_code == 0
    assert json.loads(out.read_text())["member"]["nir"] == nir
