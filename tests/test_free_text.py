"""Free text that reaches the audit log (reasons, the agent's name) is one line without
control characters, bounded the same on every engine: a line break must not forge a row of
`audit list`, and what SQLite takes PostgreSQL must take too."""

import json
import unicodedata

import pytest
from sqlmodel import Session, select

from cpms_admin import audit
from cpms_admin.errors import InvalidInput
from cpms_admin.models import AuditEvent, Member
from tests.cred_helpers import account_of
from tests.factories import make_member, snapshot
from tests.harness import Cli, invoke

FORGED = "a\nFORGED 2026-01-01 admin account.unlock 1 85 05 78 006 084 91 ok"
ACCENTED = "Identité vérifiée par téléphone avec l'adhérente (Mme Hélène Müller-Øster)"
UNSAFE = ["\t", "\r", "\n", "\x00", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\u2028", "\u2029"]
# Bidi marks, embeddings, overrides and isolates make a row read other than it is stored.
BIDI = [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u061c", "\u200e", "\u200f",
]  # fmt: skip
# Harmless inside a reason; alone they make one that says nothing, and in a name one that
# passes for another.
HIDDEN = ["\u2060", "\u00ad", "\u034f", "\u200d", "\u200c"]
# Refused anywhere: they hide text (a sentence in tag characters) or leave a gap unseen.
HIDING = ["\u200b", "\ufeff", "\U000e0041", "\ufff9", "\u206a"]


@pytest.fixture
def locked(session: Session) -> Member:
    member = make_member(session, welcome=False)
    account = account_of(session, member)
    account.failed_attempts, account.captcha_required = 4, True
    session.commit()
    return member


def reason_refusal(what: str = "the reason", most: int = 500) -> str:
    return f"{what} must be one line without control characters (at most {most} characters)"


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_line_breaks_and_control_characters_are_refused(char: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        audit.clean_text(f"checked{char}by phone", what="the reason", max_length=500)
    assert str(refused.value) == reason_refusal()


def invisible(char: str) -> str:
    return f"invisible characters are not allowed (U+{ord(char):04X}, {unicodedata.name(char)})"


@pytest.mark.parametrize("char", BIDI + HIDING, ids=[f"U+{ord(c):04X}" for c in BIDI + HIDING])
def test_bidi_marks_and_hiding_characters_are_refused_by_name(char: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        audit.clean_text(f"checked{char}by phone", what="the reason", max_length=500)
    assert str(refused.value) == f"the reason must be visible text: {invisible(char)}"


@pytest.mark.parametrize("char", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_other_invisible_characters_are_refused_in_names_and_alone(char: str) -> None:
    """Inside a reason they do no harm (a soft hyphen pasted from a word processor, an emoji's
    joiner, a closing reason stored before they were refused and imported back)."""
    assert audit.clean_text(f"checked{char}by phone", what="the reason", max_length=500)
    for text, clean, what in (
        (f"ro{char}ot", audit.clean_name, "the agent name"),
        (f" {char} ", audit.clean_text, "the reason"),
    ):
        with pytest.raises(InvalidInput) as refused:
            clean(text, what=what, max_length=100)
        assert str(refused.value) == f"{what} must be visible text: {invisible(char)}"


def test_a_reason_label_or_agent_of_invisible_characters_only_is_refused(
    cli: Cli, session: Session, locked: Member
) -> None:
    """Each would show as blank in `audit list`: a required reason that says nothing."""
    before = snapshot(session)
    for args in (
        ["account", "unlock", locked.nir, "--reason", "\u200b"],
        ["--agent", "\ufeff", "account", "unlock", locked.nir, "--reason", "called"],
        ["agent", "add", "\u200b", "--role", "support"],
        ["agent", "disable", "\u2060", "--reason", "left"],
        # A joiner is harmless in a reason, but makes a name pass for another.
        ["--agent", "ro\u200dot", "account", "unlock", locked.nir, "--reason", "called"],
        ["agent", "add", "ro\u200dot", "--role", "support"],
    ):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert "invisible characters are not allowed (U+" in result.stderr, args
    assert snapshot(session) == before


def test_agent_disable_reads_the_name_as_agent_add_does(cli: Cli) -> None:
    long = cli("agent", "disable", "x" * 100_000, "--reason", "left")
    assert (long.exit_code, long.stderr) == (2, f"Error: {reason_refusal('the agent name', 100)}\n")
    padded = cli("agent", "disable", " nobody ", "--reason", "left")
    assert (padded.exit_code, padded.stderr) == (
        3,
        "Error: no agent 'nobody' (cpms-admin agent list shows them)\n",
    )


def test_letters_accents_apostrophes_and_spaces_are_kept() -> None:
    for text in (ACCENTED, "Zoë d’Ornano", "名前を確認しました", "a\u00a0b"):
        assert audit.clean_text(f"  {text} ", what="the reason", max_length=500) == text
    assert audit.clean_text("x" * 500, what="the reason", max_length=500) == "x" * 500
    with pytest.raises(InvalidInput, match=r"\(at most 500 characters\)"):
        audit.clean_text("x" * 501, what="the reason", max_length=500)
    with pytest.raises(InvalidInput, match=r"^the agent name must not be empty$"):
        audit.clean_text("  ", what="the agent name", max_length=100)


def test_the_agent_limit_is_the_column_size() -> None:
    assert AuditEvent.__table__.c.agent.type.length == audit.AGENT_MAX_LENGTH  # type: ignore[attr-defined]


def test_record_itself_refuses_a_forged_row(session: Session, locked: Member) -> None:
    before = snapshot(session)
    with pytest.raises(InvalidInput, match="the reason must be one line"):
        audit.record(session, agent="agent.test", action="account.unlock", reason=FORGED)
    with pytest.raises(InvalidInput, match="the agent name must be one line"):
        audit.record(session, agent="x" * 101, action="account.unlock")
    with pytest.raises(ValueError, match="is not a valid AuditAction"):  # docs/audit.md's words
        audit.record(session, agent="agent.test", action="account.unlock\nforged")
    session.rollback()
    assert snapshot(session) == before


@pytest.mark.parametrize(
    "command",
    [
        ["account", "unlock", "{nir}", "--reason", FORGED],
        ["pin", "reset", "{nir}", "--channel", "post", "--reason", FORGED],
        ["code", "issue", "{nir}", "--channel", "post", "--reason", FORGED],
        ["member", "close", "{nir}", "--reason", FORGED],
        ["member", "update", "{nir}", "--city", "Paris", "--reason", FORGED],
        ["member", "close", "{nir}", "--reason", "x" * 501],
        ["code", "campaign", "--no-pin", "--reason", FORGED],
        ["code", "campaign", "--no-pin", "--dry-run", "--reason", "ok\u2029then"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_forged_reason_is_refused_and_changes_nothing(
    cli: Cli, session: Session, locked: Member, command: list[str]
) -> None:
    before = snapshot(session)
    result = cli(*(arg.format(nir=locked.nir) if arg == "{nir}" else arg for arg in command))
    assert (result.exit_code, result.stderr) == (2, f"Error: {reason_refusal()}\n")
    assert snapshot(session) == before


def test_the_unlock_of_the_brief_writes_no_row(cli: Cli, session: Session, locked: Member) -> None:
    result = cli("account", "unlock", locked.nir, "--reason", FORGED)
    assert result.exit_code == 2
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "account.unlock")).all() == []
    account = account_of(session, locked)
    assert (account.failed_attempts, account.captcha_required) == (4, True)
    assert "FORGED" not in cli("audit", "list").stdout


@pytest.mark.parametrize(
    "agent", ["x" * 101, "é" * 150, "agent\nFORGED", "agent\u202eevil", "", "   ", "\u200b"]
)
def test_a_bad_agent_is_refused_on_every_engine(
    cli: Cli, session: Session, locked: Member, agent: str
) -> None:
    before = snapshot(session)
    result = cli("--agent", agent, "account", "unlock", locked.nir, "--reason", "checked")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: the label (--agent, CPMS_AGENT) must ")
    assert snapshot(session) == before


def test_the_agent_from_the_environment_is_checked_too(cli: Cli, locked: Member) -> None:
    env = {**cli.env(), "CPMS_AGENT": "a" * 150}
    result = invoke(["account", "unlock", locked.nir, "--reason", "x"], env=env)
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {reason_refusal('the label (--agent, CPMS_AGENT)', 100)}\n",
    )


def test_the_longest_agent_and_an_accented_reason_work_on_every_engine(
    cli: Cli, locked: Member
) -> None:
    agent = "Agnès Lefèvre-" + "é" * 86
    assert len(agent) == 100
    result = cli("--agent", agent, "account", "unlock", locked.nir, "--reason", ACCENTED)
    assert result.exit_code == 0, result.output
    (event,) = json.loads(cli("--json", "audit", "list", "--action", "account.unlock").stdout)
    assert (event["label"], event["reason"]) == (agent, ACCENTED)
    shown = cli("audit", "list", "--nir", locked.nir).stdout
    assert ACCENTED in shown and agent in shown
