"""Each letter says why it was sent: first access (enrolment or a campaign), a code asked for,
a PIN reset, the move to the new portal. A letter no one asked for never says "votre demande"."""

import json
from pathlib import Path

import pytest
from sqlmodel import Session

from cpms_admin.members.nir import mask_nir
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import LetterKind, Wording
from tests.cred_helpers import give_pin
from tests.factories import make_member, make_nir
from tests.harness import Cli
from tests.import_helpers import member_of
from tests.letters_helpers import batch, letter_text, manifests

ASKED = ("Comme suite à votre demande auprès de notre Service", "à l’origine de cette demande")


@pytest.mark.parametrize(
    ("kind", "requested_by", "chosen", "wording"),
    [
        ("welcome", None, None, "first_access"),
        ("security_code", None, None, "first_access"),  # a campaign's, before 0007
        ("security_code", None, "migration", "migration"),
        ("security_code", "portal", None, "requested_code"),
        ("security_code", "agent.smith", None, "requested_code"),
        ("pin_reset", "agent.smith", None, "pin_reset"),
    ],
)
def test_the_wording_follows_the_kind_who_asked_and_the_campaign(
    kind: str, requested_by: str | None, chosen: str | None, wording: str
) -> None:
    assert Wording.of_letter(LetterKind(kind), requested_by, chosen) == wording


def _no_email(session: Session, count: int) -> list[str]:
    return [
        make_member(session, nir=make_nir(), email=None, welcome=False).nir for _ in range(count)
    ]


def test_each_letter_of_a_batch_says_why_it_was_sent(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    enrolled = make_member(session, nir=make_nir(), email=None).nir  # welcome letter queued
    asked, reset, agent_sent, *campaign = _no_email(session, 5)
    give_pin(session, settings, member_of(session, reset))  # a PIN the reset revokes
    assert cli("portal", "request-code", asked).exit_code == 0
    assert cli("pin", "reset", reset, "--channel", "post", "--reason", "phone").exit_code == 0
    assert cli("code", "issue", agent_sent, "--channel", "post", "--reason", "phone").exit_code == 0
    nirs = tmp_path / "nirs.txt"
    nirs.write_text(campaign[0] + "\n")
    first = ("code", "campaign", "--from-file", str(nirs), "--reason", "relance")
    assert cli(*first).exit_code == 0
    nirs.write_text(campaign[1] + "\n")
    moved = (*first[:-2], "--wording", "migration", "--reason", "migration")
    assert cli(*moved).exit_code == 0
    out = tmp_path / "print"
    batch(cli, out)
    [(directory, manifest)] = manifests(out)
    wording_of = {
        enrolled: "first_access",
        asked: "requested_code",
        reset: "pin_reset",
        agent_sent: "requested_code",
        campaign[0]: "first_access",
        campaign[1]: "migration",
    }
    assert sorted(le["wording"] for le in manifest["letters"]) == sorted(wording_of.values())
    by_letter = {le["letter_id"]: letter_text(directory, le) for le in manifest["letters"]}
    texts = {le["wording"] + le["kind"]: by_letter[le["letter_id"]] for le in manifest["letters"]}
    welcome, campaign_text = texts["first_accesswelcome"], texts["first_accesssecurity_code"]
    assert "Bienvenue – votre code de première connexion" in welcome
    assert "Bienvenue" not in campaign_text
    assert "Votre code de première connexion" in campaign_text
    assert "nouvel Espace Adhérent" in texts["migrationsecurity_code"]
    assert "réinitialisé" in texts["pin_resetpin_reset"]
    # Who asked: the member on the portal, or an agent for them.
    [from_portal] = [
        by_letter[le["letter_id"]]
        for le in manifest["letters"]
        if le["nir_masked"] == mask_nir(asked)
    ]
    [from_agent] = [
        by_letter[le["letter_id"]]
        for le in manifest["letters"]
        if le["nir_masked"] == mask_nir(agent_sent)
    ]
    assert "Vous avez demandé un code de sécurité depuis votre Espace Adhérent" in from_portal
    assert "ignorez simplement ce courrier" in from_portal
    assert not any(phrase in from_portal for phrase in ASKED)
    assert all(phrase in from_agent for phrase in ASKED)
    assert "ignorez" not in from_agent
    for key in ("first_accesswelcome", "first_accesssecurity_code", "migrationsecurity_code"):
        assert not any(phrase in texts[key] for phrase in ASKED), key


def test_a_pin_reset_for_a_member_who_never_had_one_greets_a_newcomer(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """No old password to speak of: the reset's code rides on the welcome letter, which
    says what an enrolment letter says."""
    newcomer = make_member(session, nir=make_nir(), email=None).nir  # welcome letter queued
    reset = cli("--json", "pin", "reset", newcomer, "--channel", "post", "--reason", "phone")
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["letter_reused"] is True
    out = tmp_path / "print"
    batch(cli, out)
    [(directory, manifest)] = manifests(out)
    [letter] = manifest["letters"]
    assert (letter["kind"], letter["wording"]) == ("welcome", "first_access")
    text = letter_text(directory, letter)
    assert "Bienvenue – votre code de première connexion" in text
    assert "réinitialisé" not in text and "ancien mot de passe" not in text


def test_a_campaign_records_its_wording_in_the_audit(cli: Cli, session: Session) -> None:
    _no_email(session, 1)
    command = ("code", "campaign", "--no-pin", "--wording", "migration", "--reason", "bascule")
    assert cli(*command).exit_code == 0
    listed = cli("--json", "audit", "list", "--action", "code.campaign")
    assert '"wording": "migration"' in listed.stdout


def test_a_preview_takes_a_wording(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "migration.pdf"
    command = ("letters", "preview", "security_code", "--wording", "migration", "--out", str(out))
    result = cli("--json", *command)
    assert result.exit_code == 0, result.output
    assert '"wording": "migration"' in result.stdout
    assert cli("letters", "preview", "welcome", "--wording", "nope", "--out", "x").exit_code == 2
