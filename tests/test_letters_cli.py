"""`letters list` and `letters preview` as an agent uses them: the queue by status with the
reason of a cancellation, and a SPÉCIMEN letter that issues nothing and stores nothing."""

import json
import re
from pathlib import Path
from typing import Any

import pypdf
from sqlalchemy import Engine, event
from sqlmodel import Session

from cpms_admin.members import records
from cpms_admin.members.nir import mask_nir
from cpms_admin.settings import Settings
from tests.cred_helpers import give_pin
from tests.factories import make_member, make_nir, snapshot
from tests.harness import Cli
from tests.letters_helpers import letter_text, queue_members


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)


def test_list_shows_each_status_with_the_reason_of_a_cancellation(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    has_pin, waiting, leaving = queue_members(session, 3)
    give_pin(session, settings, has_pin)
    records.close_member(session, nir=leaving.nir, reason="décès", agent="agent.test")
    session.commit()
    assert cli("letters", "batch", "--out", str(tmp_path / "out")).exit_code == 0

    listed = json.loads(cli("--json", "letters", "list").stdout)
    by_nir = {row["nir"]: row for row in listed}
    assert [row["id"] for row in listed] == sorted((row["id"] for row in listed), reverse=True)
    assert by_nir[waiting.nir]["status"] == "printed"
    assert by_nir[waiting.nir]["batch_id"] is not None
    for moot in (has_pin, leaving):
        assert by_nir[moot.nir]["status"] == "cancelled" and by_nir[moot.nir]["status_reason"]

    cancelled = json.loads(cli("--json", "letters", "list", "--status", "cancelled").stdout)
    assert {row["nir"] for row in cancelled} == {has_pin.nir, leaving.nir}
    mine = json.loads(cli("--json", "letters", "list", "--nir", waiting.nir).stdout)
    assert [row["nir"] for row in mine] == [waiting.nir]
    table = cli("letters", "list", "--status", "printed")
    assert table.exit_code == 0 and "printed" in table.stdout and has_pin.nir not in table.stdout


def test_list_refuses_an_unknown_status_and_an_unknown_member(cli: Cli) -> None:
    assert cli("letters", "list", "--status", "lost").exit_code == 2
    missing = cli("letters", "list", "--nir", make_nir())
    assert (missing.exit_code, missing.stderr.startswith("Error: no member")) == (3, True)


def test_preview_is_a_specimen_addressed_to_the_member_and_issues_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    member = make_member(session, last_name="Lefèvre", first_name="Anaïs", city="Saint-Étienne",
                         postcode="42000")  # fmt: skip
    before = snapshot(session)
    out = tmp_path / "apercu.pdf"
    result = cli("--json", "letters", "preview", "pin_reset", "--out", str(out), "--nir",
                 member.nir)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["kind"], summary["specimen"], summary["nir_masked"]) == (
        "pin_reset",
        True,
        mask_nir(member.nir),
    )
    text = pdf_text(out)
    assert "SPÉCIMEN" in text
    assert "LEFÈVRE" in text.upper() and "42000 SAINT ETIENNE" in text
    assert member.nir not in re.sub(r"\s", "", text)  # the NIR is printed masked
    assert snapshot(session) == before


def test_preview_reads_the_member_once_and_renders_outside_any_transaction(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The member is read, the transaction ends, then the letter is laid out: reading the
    member again (as an expired object would be) would open a transaction held while it
    renders."""
    member = make_member(session)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        out = tmp_path / "apercu.pdf"
        result = cli("letters", "preview", "welcome", "--out", str(out), "--nir", member.nir)
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert result.exit_code == 0, result.output
    assert len([s for s in statements if re.search(r"\bFROM member\b", s)]) == 1, statements


def test_preview_without_a_member_needs_no_database(cli: Cli, tmp_path: Path) -> None:
    nowhere = cli.with_settings(database_url=f"sqlite:///{tmp_path / 'absent' / 'x.db'}")
    out = tmp_path / "welcome.pdf"
    assert nowhere("letters", "preview", "welcome", "--out", str(out)).exit_code == 0
    assert len(pypdf.PdfReader(out).pages) >= 1


def test_preview_refuses_bad_input_with_its_exit_code(cli: Cli, tmp_path: Path) -> None:
    out, nowhere = str(tmp_path / "x.pdf"), str(tmp_path / "no" / "x.pdf")
    assert cli("letters", "preview", "postcard", "--out", out).exit_code == 2
    assert cli("letters", "preview", "welcome", "--out", nowhere).exit_code == 2
    assert cli("letters", "preview", "welcome", "--out", out, "--nir", make_nir()).exit_code == 3
    assert not Path(out).exists()


def _said(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_letters_say_the_real_wait_after_wrong_pins(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Not "quelques minutes": the wait and the count of the lockout settings."""
    out = tmp_path / "welcome.pdf"
    assert cli("letters", "preview", "welcome", "--out", str(out)).exit_code == 0
    assert "Après 3 essais erronés, patientez 1 minute avant une nouvelle tentative." in _said(
        pdf_text(out)
    )
    stricter = cli.with_settings(lockout_max_failures=2, lockout_cooldown_seconds=120)
    make_member(session, welcome=True, email=None)
    summary = json.loads(stricter("--json", "letters", "batch", "--out", str(tmp_path)).stdout)
    (entry,) = summary["letters"]
    printed = _said(letter_text(Path(summary["directory"]), entry))
    assert "Après 2 essais erronés, patientez 2 minutes avant une nouvelle tentative." in printed
    at_once = cli.with_settings(lockout_max_failures=1, lockout_hard_after=1)
    assert at_once("letters", "preview", "pin_reset", "--out", str(out)).exit_code == 0
    assert "Après 1 essai erroné, votre accès est bloqué : contactez le service clients." in _said(
        pdf_text(out)
    )


def test_a_return_address_wider_than_its_window_stops_preview_and_batch_before_anything(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """38 characters pass the setting's check, but 38 wide capitals run past the return
    window's 80 mm: nothing is printed or claimed until the setting is fixed."""
    queue_members(session, 2)
    wide = cli.with_settings(letter_return_address="CPMS|" + "W" * 38 + "|75901 PARIS CEDEX 15")
    preview = wide("letters", "preview", "welcome", "--out", str(tmp_path / "x.pdf"))
    printed = wide("letters", "batch", "--out", str(tmp_path / "out"))
    for result in (preview, printed):
        assert result.exit_code == 5, result.output
        assert "CPMS_LETTER_RETURN_ADDRESS: line 'WWWWWW" in result.stderr
        assert "more than the return window's 80 mm: shorten it" in result.stderr
    assert not (tmp_path / "x.pdf").exists() and not (tmp_path / "out").exists()
    pending = json.loads(cli("--json", "letters", "list", "--status", "pending").stdout)
    assert len(pending) == 2
