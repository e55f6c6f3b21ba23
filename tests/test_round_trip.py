"""Every column through an export and back: export -> import into an empty database ->
export gives the same bytes in each format; a closed member stays closed, with why and when;
an import never changes a member's status."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select, update

from cpms_admin.models import Letter, Member
from tests.factories import make_member, make_nir
from tests.harness import Cli, FakeClock
from tests.import_helpers import (
    forget_members,
    json_out,
    member_of,
    person,
    report_rows,
    summaries,
    write_csv,
)

EXPORTS = {  # name: the options of `members export`
    "csv": ("--format", "csv"),
    "excel.csv": ("--excel",),
    "jsonl": ("--format", "jsonl"),
    "xlsx": ("--format", "xlsx"),
}


def status_of(session: Session, nir: str) -> str:
    session.rollback()
    return session.exec(select(Member.status).where(Member.nir == nir)).one()


def every_column(session: Session, cli: Cli, clock: FakeClock) -> None:
    """Members filling every column between them, one of them closed."""
    make_member(
        session,
        nir=make_nir(1),
        civility="M",
        last_name="Lefèvre-Dupont",
        first_name="Gaëtan",
        birth_date="1985-05-12",
        email=None,
        street="3, rue de l'Église",
        address_complement='Appt 12; 2e étage "B"',
        address_building="Résidence Les Tilleuls",
        locality="Lieu-dit La Croix",
        postcode="01000",
        city="Bourg-en-Bresse",
    )
    make_member(
        session,
        nir=make_nir(2),
        civility="MME",
        last_name="Nguyễn Thị Minh Khai de la Tour d'Auvergne",
        first_name="Łucja",
        envelope_name="Mme L. NGUYEN",
        street="12 Grand-Rue",
        postcode="1003",
        city="Lausanne",
        country="CH",
    )
    closed = make_member(session, nir=make_nir(3), email="zoe@example.fr")
    clock.advance(days=3, microseconds=123456)  # kept to the second
    # Pasted from a word processor, with its non-breaking spaces: kept as an import reads it.
    pasted = '\u00a0départ; "mutation"\u00a0'
    assert cli("member", "close", closed.nir, "--reason", pasted).exit_code == 0


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_import_export_gives_the_same_bytes(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, name: str
) -> None:
    every_column(session, cli, clock)
    first, second = tmp_path / f"first.{name}", tmp_path / f"second.{name}"
    assert cli("members", "export", *EXPORTS[name], "--out", str(first)).exit_code == 0
    before = summaries(session)
    forget_members(session)
    clock.advance(days=30)
    result = cli("--json", "members", "import", str(first))
    assert result.exit_code == 0, result.output
    assert json_out(result)["created"] == 3
    assert summaries(session) == before
    assert cli("members", "export", *EXPORTS[name], "--out", str(second)).exit_code == 0
    assert second.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("name", list(EXPORTS))
def test_an_export_imported_back_into_its_own_database_changes_nothing(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, name: str
) -> None:
    every_column(session, cli, clock)
    out = tmp_path / f"m.{name}"
    assert cli("members", "export", *EXPORTS[name], "--out", str(out)).exit_code == 0
    before = summaries(session)
    result = cli("--json", "members", "import", str(out), "--on-conflict", "update")
    assert result.exit_code == 0, result.output
    assert (json_out(result)["updated"], json_out(result)["skipped"]) == (0, 3)
    assert summaries(session) == before


def test_a_reason_stored_with_a_non_breaking_space_reads_back_as_the_same(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    """Reasons recorded before every kind of white space was taken off their ends still hold
    one: the import reads it without, and must still find it the member's."""
    every_column(session, cli, clock)
    session.exec(
        update(Member)
        .where(col(Member.nir) == make_nir(3))
        .values(closed_reason='\u00a0départ; "mutation"\u00a0')
    )
    session.commit()
    out = tmp_path / "m.csv"
    assert cli("members", "export", "--out", str(out)).exit_code == 0
    result = cli("--json", "members", "import", str(out), "--on-conflict", "update")
    assert result.exit_code == 0, result.output
    assert (json_out(result)["updated"], json_out(result)["skipped"]) == (0, 3)


def test_a_closed_member_comes_back_closed_with_why_and_when(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    every_column(session, cli, clock)
    nir = make_nir(3)
    session.rollback()
    closed_at = session.exec(select(Member.closed_at).where(Member.nir == nir)).one()
    assert closed_at is not None and closed_at.microsecond == 123456
    out = tmp_path / "m.jsonl"
    cli("members", "export", "--format", "jsonl", "--out", str(out))
    forget_members(session)
    result = cli("--json", "members", "import", str(out), "--welcome-letters")
    assert json_out(result)["welcome_letters"] == 2  # none for the closed member
    back = member_of(session, nir)
    assert (back.status, back.closed_reason) == ("closed", 'départ; "mutation"')
    assert back.closed_at == closed_at.replace(microsecond=0)
    letters = session.exec(select(Letter).where(col(Letter.member_id) == back.id)).all()
    assert letters == []
    login = cli("--json", "portal", "login", nir, input="123456\n")
    assert json.loads(login.stdout)["reason"] == "closed"


def test_the_status_columns_are_checked(cli: Cli, tmp_path: Path) -> None:
    columns = ("nir", "last_name", "first_name", "street", "postcode", "city", "status")
    extra = ("closed_reason", "closed_at")
    rows = [
        person(1, status="Closed", closed_reason="décès", closed_at="2026-01-31T10:00:00+01:00"),
        person(2, status="ACTIVE"),
        person(3, status="gone"),
        person(4, status="closed", closed_at="2026-01-31"),
        person(5, status="closed", closed_reason="départ"),
        person(6, status="active", closed_reason="départ"),
        person(7, closed_at="2026-01-31"),
        person(8, status="closed", closed_reason="x", closed_at="46053"),
        person(9, status="closed", closed_reason="x", closed_at="31/01/2026"),
        person(10, status="closed", closed_reason="a\tb", closed_at="2026-01-31"),
        person(11),
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=columns + extra)
    errors = tmp_path / "rejets.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert json_out(result)["created"] == 3
    assert [(row["line"], row["field"], row["reason"]) for row in report_rows(errors)] == [
        ("4", "status", "status must be active or closed, got 'gone'"),
        ("5", "closed_reason", "a closed member needs closed_reason: why"),
        ("6", "closed_at", "a closed member needs closed_at: when, in ISO 8601"),
        ("7", "closed_reason", "closed_reason is for a closed member: give status closed"),
        ("8", "closed_at", "closed_at is for a closed member: give status closed"),
        (
            "9",
            "closed_at",
            "closed_at '46053' is a spreadsheet's serial number for a date (2026-01-31?): the "
            "column lost its date format; write it YYYY-MM-DD; to avoid it, give this column "
            "the Text format before the values go in (a CSV: in the dialog that opens it), or "
            "export with `members export --excel` or `--format xlsx`, which keep it as text",
        ),
        (
            "10",
            "closed_at",
            "closed_at '31/01/2026' must be an ISO 8601 time, e.g. 2026-01-31T09:30:00+00:00",
        ),
        (
            "11",
            "closed_reason",
            "closed_reason must be one line without control characters (at most 500 characters)",
        ),
    ]


def test_a_closing_time_is_a_past_moment_a_placeholder_for_no_date_is_refused(
    cli: Cli, clock: FakeClock, tmp_path: Path
) -> None:
    """Legacy systems write 0001-01-01 for "no date"; a typed year can land in the future,
    where purge would never reach the member. Either is the row's refusal, with its line,
    never the whole import's failure (an offset past the first or last day once was)."""
    columns = ("nir", "last_name", "first_name", "street", "postcode", "city", "status")
    extra = ("closed_reason", "closed_at")
    tomorrow_and_more = (clock.now + timedelta(days=1, minutes=1)).isoformat()
    times = [
        "0001-01-01T00:00:00+01:00",
        "0001-01-01",
        "1899-12-31T23:59:59+00:00",
        "9999-12-31T23:30:00-01:00",
        "9999-12-31",
        tomorrow_and_more,
        "1900-01-01",
        clock.now.isoformat(),
    ]
    rows = [
        person(number, status="closed", closed_reason="départ", closed_at=moment)
        for number, moment in enumerate(times, start=1)
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=columns + extra)
    errors = tmp_path / "rejets.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert json_out(result)["created"] == 2
    before = "is before 1900: a placeholder for no date, not when the member was closed"
    ahead = "is in the future: give when the member was closed"
    assert [(row["line"], row["field"], row["reason"]) for row in report_rows(errors)] == [
        ("2", "closed_at", f"closed_at '0001-01-01T00:00:00+01:00' {before}"),
        ("3", "closed_at", f"closed_at '0001-01-01' {before}"),
        ("4", "closed_at", f"closed_at '1899-12-31T23:59:59+00:00' {before}"),
        ("5", "closed_at", f"closed_at '9999-12-31T23:30:00-01:00' {ahead}"),
        ("6", "closed_at", f"closed_at '9999-12-31' {ahead}"),
        ("7", "closed_at", f"closed_at {tomorrow_and_more!r} {ahead}"),
    ]


def test_an_import_never_changes_a_status(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    every_column(session, cli, clock)
    active, closed = make_nir(1), make_nir(3)
    out = tmp_path / "m.csv"
    cli("members", "export", "--out", str(out))
    text = out.read_text()
    lines = text.splitlines()
    flipped = [
        lines[0],
        lines[1].replace(",active,,", ",closed,départ,2026-01-01T00:00:00+00:00"),
        lines[3].replace("Zoé", "Zoë").split(",closed,")[0] + ",active,,",
    ]
    assert ",closed," in flipped[1] and flipped[2].endswith(",active,,")
    path = tmp_path / "flipped.csv"
    path.write_text("\n".join(flipped) + "\n")
    errors = tmp_path / "rejets.csv"
    result = cli(
        "--json", "members", "import", str(path), "--on-conflict", "update", "--errors", str(errors)
    )
    assert result.exit_code == 1
    assert json_out(result)["invalid"] == 2
    reasons = {row["nir"]: row["reason"] for row in report_rows(errors)}
    assert reasons[active] == (
        "the member is active: an import does not close a member (close them with "
        "`cpms-admin member close NIR --reason R`, which also revokes their codes)"
    )
    assert reasons[closed].startswith("the member was closed on 2026-11-26T09:00:00+00:00 (d")
    assert (status_of(session, active), status_of(session, closed)) == ("active", "closed")
    # Without status columns, the other columns of a closed member are updated as before.
    path = write_csv(tmp_path / "plain.csv", [{**person(3), "nir": closed, "city": "Paris"}])
    result = cli("--json", "members", "import", str(path), "--on-conflict", "update")
    assert json_out(result)["updated"] == 1
    assert status_of(session, closed) == "closed"


def test_members_export_status_filter_still_works(
    cli: Cli, session: Session, clock: FakeClock
) -> None:
    every_column(session, cli, clock)
    result = cli("members", "export", "--format", "jsonl", "--status", "closed")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["nir"], row["status"]) for row in rows] == [(make_nir(3), "closed")]
    assert rows[0]["closed_at"] == "2026-11-26T09:00:00+00:00"
    assert not session.exec(select(Member).where(Member.status == "gone")).all()
