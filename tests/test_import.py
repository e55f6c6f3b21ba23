"""`members import`: real-world files, bad rows with their lines, dry runs that tell the truth,
re-runs that change nothing, conflicts, and one audit event per run."""

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, func, select

from cpms_admin.bulk.formats import read_member_rows
from cpms_admin.bulk.importer import import_members
from cpms_admin.errors import Conflict, InvalidInput
from cpms_admin.members.fields import COLUMNS
from cpms_admin.members.search import search_values
from cpms_admin.models import Account, AuditEvent, Letter, Member
from tests.audit_helpers import audit_of, run_event, run_events, run_id
from tests.factories import make_member, make_nir
from tests.harness import Cli
from tests.import_helpers import (
    damage_sheet,
    json_out,
    member_of,
    person,
    report_rows,
    snap,
    summaries,
    write_csv,
    write_jsonl,
    write_xlsx,
)


def count(session: Session, model: Any) -> int:
    session.rollback()
    return session.exec(select(func.count()).select_from(model)).one()


# --- the dialects office software writes ---------------------------------------------------


def test_semicolons_windows_1252_and_crlf_as_a_french_excel_writes(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    row = person(
        1,
        last_name="Lefèvre",
        first_name="Gaëtan",
        city="Saint-Étienne",
        postcode="42000",
        address_complement="Bâtiment B; 3e étage",
    )
    path = write_csv(tmp_path / "adherents.csv", [row], sep=";", encoding="cp1252", eol="\r\n")
    result = cli("--json", "members", "import", str(path))
    assert result.exit_code == 0, result.output
    assert json_out(result) == {
        "created": 1,
        "updated": 0,
        "skipped": 0,
        "invalid": 0,
        "welcome_letters": 0,
        "letters_voided": 0,
        "letters_queued_again": 0,
        "emailed_codes_revoked": 0,
        "dry_run": False,
    }
    member = member_of(session, row["nir"])
    assert (member.last_name, member.first_name, member.city) == (
        "Lefèvre",
        "Gaëtan",
        "Saint-Étienne",
    )
    assert member.address_complement == "Bâtiment B; 3e étage"  # quoted separator kept


def test_utf8_bom_commas_quoted_separators_and_padding(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    nir = make_nir(2)
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + (
            " NIR , Civility,last_name,first_name,birth_date,email,street,address_complement,"
            "postcode,city,country\r\n"
            f' {nir} ,  MME , Martin ,"Élodie" , ,  elodie@example.fr ,"5, rue de la Paix",'
            '"Appt 3, 2e étage", 69002 ,  Lyon ,\r\n'
        ).encode()
    )
    result = cli("members", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Created 1, updated 0, skipped 0 (already there), rejected 0." in result.stdout
    member = member_of(session, nir)
    assert member.civility == "MME"
    assert (member.first_name, member.street) == ("Élodie", "5, rue de la Paix")
    assert (member.address_complement, member.postcode, member.city, member.country) == (
        "Appt 3, 2e étage",
        "69002",
        "Lyon",
        "FR",
    )
    assert member.birth_date is None and member.email == "elodie@example.fr"


def test_explicit_encoding_and_delimiter(cli: Cli, session: Session, tmp_path: Path) -> None:
    row = person(3, city="Besançon", postcode="25000")
    path = write_csv(tmp_path / "tabs.txt", [row], sep="\t", encoding="latin-1")
    result = cli("members", "import", str(path), "--encoding", "latin-1", "--delimiter", "tab")
    assert result.exit_code == 0, result.output
    assert member_of(session, row["nir"]).city == "Besançon"


def test_json_lines(cli: Cli, session: Session, tmp_path: Path) -> None:
    rows = [
        person(4),
        {**person(5), "postcode": 69002, "city": "Lyon", "email": None},
    ]  # a number, a null
    result = cli("--json", "members", "import", str(write_jsonl(tmp_path / "m.jsonl", rows)))
    assert result.exit_code == 0, result.output
    assert json_out(result)["created"] == 2
    assert member_of(session, rows[1]["nir"]).postcode == "69002"


def test_imported_members_are_searchable_and_stamped(
    cli: Cli, session: Session, clock: Any, tmp_path: Path
) -> None:
    row = person(6, last_name="Müller", first_name="Zoé", city="Orléans", postcode="45000")
    cli("members", "import", str(write_csv(tmp_path / "m.csv", [row])))
    member = member_of(session, row["nir"])
    # the same column `member add` fills
    assert member.search_text == search_values(member)["search_text"]
    assert member.imported_at == clock.now and member.created_at == clock.now
    found = cli("--json", "member", "list", "--search", "muller zoe orleans")
    assert [m["nir"] for m in json.loads(found.stdout)] == [row["nir"]]
    account = session.get(Account, member.id)
    assert account is not None and account.pin_hash is None  # no argon2 work on import


# --- bad rows -------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_their_lines_and_the_others_imported(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    good = [person(10), person(11), person(12)]
    lines = [
        ",".join(COLUMNS),
        ",".join(good[0].get(c) or "" for c in COLUMNS),  # line 2
        ",".join({**good[1], "nir": "185057800608492"}.get(c) or "" for c in COLUMNS),
        '"multi-line",,"unclosed\nquote",x',  # lines 4-5
        ",".join({**good[1], "postcode": "7500"}.get(c) or "" for c in COLUMNS),  # line 6
        "1,2,3",  # line 7
        ",".join(good[1].get(c) or "" for c in COLUMNS),  # line 8
        ",".join({**good[0], "city": "Paris 11e"}.get(c) or "" for c in COLUMNS),  # line 9
        ",".join(good[2].get(c) or "" for c in COLUMNS),
    ]  # line 10
    path.write_text("\n".join(lines) + "\n")
    errors = tmp_path / "rejets.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert json_out(result) == {
        "created": 3,
        "updated": 0,
        "skipped": 0,
        "invalid": 5,
        "welcome_letters": 0,
        "letters_voided": 0,
        "letters_queued_again": 0,
        "emailed_codes_revoked": 0,
        "dry_run": False,
    }
    report = report_rows(errors)
    assert [(r["line"], r["field"]) for r in report] == [
        ("3", "nir"),
        ("4", ""),
        ("6", "postcode"),
        ("7", ""),
        ("9", "nir"),
    ]
    assert "2-digit key does not match" in report[0]["reason"]
    assert report[2]["reason"].startswith(
        "postcode '7500' must be 5 digits: if a spreadsheet dropped its leading zero, 07500 "
        "is not a postcode of Paris either"
    )
    assert report[3]["reason"] == (
        "expected 14 fields, found 3 (a line break inside a value not in double quotes, or "
        "empty fields at the end left out)"
    )
    assert report[4]["reason"].endswith("is already on line 2 of this file")
    assert report[2]["street"] == "12 rue des Lilas"  # original values, to fix and re-import
    assert "Warning: line 6: postcode '7500' must be 5 digits: " in result.stderr
    assert set(summaries(session)) == {row["nir"] for row in good}


def test_a_phone_number_in_a_name_is_a_rejected_row(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A source system's notes pasted into a name (`MARTIN TEL 0612345678`): the row is
    rejected, saying why, and the others imported."""
    rows = [person(1), person(2, last_name="MARTIN TEL 0612345678"), person(3)]
    result = cli("members", "import", str(write_csv(tmp_path / "m.csv", rows)))
    assert result.exit_code == 1
    assert (
        "Warning: line 3: last_name 'MARTIN TEL 0612345678' is not a name: no name holds '0'\n"
        in result.stderr
    )
    assert set(summaries(session)) == {make_nir(1), make_nir(3)}


def test_an_export_imported_as_a_dry_run_lists_the_members_current_rules_refuse(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The README's way to find members stored before a rule that refuses one of their
    values (their `member update` is refused until it is fixed): each is a line of the
    report, with the reason, and nothing is written."""
    make_member(session, nir=make_nir(1))  # valid: not in the report
    refused = make_member(session, nir=make_nir(2))
    refused.last_name = "Martin 0612345678"  # stored before names refused digits
    session.add(refused)
    session.commit()
    exported = tmp_path / "all.csv"
    assert cli("members", "export", "--out", str(exported)).exit_code == 0
    before = snap(session)
    report = tmp_path / "refused.csv"
    checked = cli(
        "members", "import", str(exported), "--dry-run", "--on-conflict", "update",
        "--errors", str(report),
    )  # fmt: skip
    assert checked.exit_code == 1
    assert [(row["nir"], row["reason"]) for row in report_rows(report)] == [
        (refused.nir, "last_name 'Martin 0612345678' is not a name: no name holds '0'")
    ]
    assert snap(session) == before


def test_a_refused_run_leaves_no_earlier_report(cli: Cli, session: Session, tmp_path: Path) -> None:
    """A script reading `--errors` after a refused file must not find an earlier run's rows:
    the earlier report is removed; never a file that is no report (arguments swapped), a
    link, or the very file imported."""
    errors = tmp_path / "rejets.csv"
    errors.write_text("line,field,reason,nir\n9,nir,an earlier run's,1\n", encoding="utf-8-sig")
    lacking = tmp_path / "m.csv"
    lacking.write_text("nir;last_name\n185057800608491;Martin\n")
    refused = cli("members", "import", str(lacking), "--errors", str(errors))
    assert refused.exit_code == 2, refused.output
    assert not errors.exists()
    assert f"Note: {errors} removed: it held an earlier run's rejected rows" in refused.stderr

    swapped = cli("members", "import", "--errors", str(lacking), str(errors))  # no such file
    assert swapped.exit_code == 2 and lacking.exists() and "removed" not in swapped.stderr
    report = tmp_path / "report.csv"
    report.write_text("line,field,reason,nir\n", encoding="utf-8-sig")
    errors.symlink_to(report)
    assert cli("members", "import", str(lacking), "--errors", str(errors)).exit_code == 2
    assert errors.is_symlink() and report.exists()
    assert summaries(session) == {}


@pytest.mark.parametrize("where", ["folder", ".", ""])
def test_an_errors_report_named_as_a_folder_is_refused_in_one_line(
    cli: Cli, session: Session, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--errors` given a folder (a typo, an empty variable: `--errors "$DIR"`): a refusal,
    in JSON too, not a traceback; nothing is imported."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    path = write_csv(tmp_path / "m.csv", [person(1)])
    result = cli("--json", "members", "import", str(path), "--errors", where)
    folder = tmp_path / where if where == "folder" else tmp_path
    assert (result.exit_code, json_out(result)) == (
        2,
        {
            "error": f"{folder} is a directory; refusing to replace it: "
            "remove it or choose another name",
            "exit_code": 2,
        },
    )
    assert "Traceback" not in result.output
    assert count(session, Member) == 0


def test_the_report_of_a_file_lacking_columns_is_in_line_order(cli: Cli, tmp_path: Path) -> None:
    """Without `country`, a wrong city is judged with the member's country, which only
    `--on-conflict update` reads: such a row comes last then (judged after the rest of the
    file), but with the default, skip, it is refused in its place like any other."""
    columns = ("nir", "last_name", "first_name", "street", "postcode", "city")
    rows = [
        person(1, city="Lyon"),  # line 2: 75011 is Paris's, unless the member lives abroad
        {"nir": "1"},  # line 3: a NIR of one digit
        person(3, last_name="Nul\x01l"),  # line 4
        person(4),
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=columns)
    with path.open("a") as handle:
        handle.write("1,2,3\n")  # line 6
    errors = tmp_path / "rejets.csv"
    result = cli("members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert [row["line"] for row in report_rows(errors)] == ["2", "3", "4", "6"]
    updating = cli("members", "import", str(path), "--errors", str(errors), "--on-conflict",
                   "update")  # fmt: skip
    assert updating.exit_code == 1, updating.output
    assert [row["line"] for row in report_rows(errors)] == ["3", "6", "2", "4"]


def test_rejected_rows_carrying_a_pin_hash_are_named_as_left_out_of_the_report(
    cli: Cli, tmp_path: Path
) -> None:
    """The report leaves PIN hashes out (people open it): a row that had one, fixed and
    imported from the report, would give its member no PIN. The agent is told which."""
    from tests.cred_helpers import LEGACY

    good_hash = LEGACY["bcrypt-2b"]()
    rows = [
        person(1, pin_hash="notahash"),  # line 2: refused for its hash
        person(2, postcode="7500", pin_hash=good_hash),  # line 3: for its postcode
        person(3, postcode="7500"),  # line 4: no hash
        person(4, pin_hash=good_hash),
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=(*COLUMNS, "pin_hash"))
    errors = tmp_path / "rejets.csv"
    result = cli("members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"Warning: 2 rejected rows carried a PIN hash, which {errors} leaves out (lines 2, "
        f"3): imported from {errors} once fixed, their members would have no PIN; fix those "
        "rows in the original file"
    )
    assert "pin_hash" not in report_rows(errors)[0]
    assert good_hash[7:] not in result.stderr + errors.read_text()
    without = cli("members", "import", str(path))  # no report: nothing left out
    assert "carried a PIN hash" not in without.stderr
    # Refused once merged with the member (an update closing them): the same.
    closing = {**rows[3], "status": "closed", "closed_reason": "x", "closed_at": "2026-01-01"}
    columns = (*COLUMNS, "status", "closed_reason", "closed_at", "pin_hash")
    path = write_csv(tmp_path / "closing.csv", [closing], columns=columns)
    updated = cli(
        "members", "import", str(path), "--errors", str(errors), "--on-conflict", "update"
    )
    assert updated.exit_code == 1, updated.output
    assert "Warning: 1 rejected row carried a PIN hash" in updated.stderr


def test_a_nir_repeated_anywhere_in_the_file_keeps_its_first_valid_row(
    session: Session, tmp_path: Path
) -> None:
    """In one batch or across batches (of 2 rows here), the first valid row of a NIR is
    imported and every later one refused, pointing to it; an invalid row is not a first."""
    one, two, three = (make_nir(serial) for serial in (1, 2, 3))
    nirs = [one, two, one, two, three, three, two, one]
    problems = {1: {"postcode": "123"}}  # line 3: invalid, so not two's first
    # Lines 2 to 9, in batches of 2: (2, 3), (4, 5), (6, 7), (8, 9).
    names = ["Anne", "Bruno", "Chloé", "Denis", "Emma", "Félix", "Gaël", "Hugo"]
    rows = [
        person(at + 1, nir=nir, first_name=names[at], **problems.get(at, {}))
        for at, nir in enumerate(nirs)
    ]
    refused: list[tuple[int, str]] = []
    counts = import_members(
        session,
        member_file=read_member_rows(write_csv(tmp_path / "m.csv", rows)),
        agent="test",
        batch_size=2,
        on_error=lambda error: refused.append((error.line, error.reason)),
    )
    assert (counts.created, counts.invalid) == (3, 5)
    firsts = {4: 2, 7: 6, 8: 5, 9: 2}
    assert [line for line, _ in refused] == [3, 4, 7, 8, 9]
    for line, reason in refused[1:]:
        assert reason.endswith(f"is already on line {firsts[line]} of this file"), reason
    imported = {m.nir: m.first_name for m in session.exec(select(Member))}
    assert imported == {one: "Anne", two: "Denis", three: "Emma"}


def test_rejected_rows_beyond_the_first_ten_point_to_the_report(cli: Cli, tmp_path: Path) -> None:
    rows = [person(100 + n, postcode="123") for n in range(12)]
    result = cli("members", "import", str(write_csv(tmp_path / "bad.csv", rows)))
    assert result.exit_code == 1
    assert result.stderr.count("Warning: line ") == 10
    assert "... and 2 more rejected rows (give --errors FILE to get them all)" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("nir;name\n1;2\n", "unknown columns: name"),
        ("", "the file is empty"),
        (
            "nir,last_name,first_name,street,postcode,city\n"
            + f'{make_nir(1)},A,B,"1 rue,75001,P\n'
            + "\n".join(f"{make_nir(n)},A,B,1 rue,75001,Paris" for n in range(2, 30))
            + "\n",
            "unbalanced quote",
        ),
    ],
)
def test_an_unreadable_file_is_exit_2_and_writes_nothing(
    cli: Cli, session: Session, tmp_path: Path, content: str | None, message: str
) -> None:
    before = snap(session)
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    result = cli("members", "import", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert snap(session) == before


def _damaged_workbook(tmp_path: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A workbook of 1,200 members (more than the reading helper sends at once, so that some
    reach the writer first) whose sheet's XML went through `damage`."""
    good = write_xlsx(tmp_path / "good.xlsx", [person(n) for n in range(1, 1201)])
    return damage_sheet(good, tmp_path / "damaged.xlsx", damage)


BROKEN_ROW = b'<row r="1300"><c r="A1300"><v>1</v></rowx>'


@pytest.mark.parametrize(
    "damage",
    [
        lambda xml: xml.replace(b"</sheetData>", BROKEN_ROW + b"</sheetData>"),
        lambda xml: xml[: xml.index(b"</sheetData>")],
    ],
    ids=["malformed", "cut-short"],
)
def test_a_workbook_damaged_past_its_first_batches_is_refused_before_any_write(
    session: Session, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A workbook is parsed as it streams: its XML is read through to its end before the
    first batch is written, as a CSV file's quotes are, so its damage never leaves half an
    import behind."""
    path = _damaged_workbook(tmp_path, damage)
    before = snap(session)
    with pytest.raises(InvalidInput, match="not a workbook that can be read"):
        import_members(session, member_file=read_member_rows(path), agent="t", batch_size=100)
    assert snap(session) == before  # not a member, not an audit event


def test_a_workbook_row_past_the_last_column_is_rejected_and_the_rest_imported(
    cli: Cli, tmp_path: Path
) -> None:
    far = b'<row r="1300"><c r="XFE1300" t="inlineStr"><is><t>x</t></is></c></row>'
    path = _damaged_workbook(
        tmp_path, lambda xml: xml.replace(b"</sheetData>", far + b"</sheetData>")
    )
    result = cli("--json", "members", "import", str(path))
    assert result.exit_code == 1, result.output
    assert (json_out(result)["created"], json_out(result)["invalid"]) == (1200, 1)
    assert "line 1300: a cell in column 16,385, past a spreadsheet's last" in result.stderr


def test_undecodable_with_the_given_encoding_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [person(1, city="Besançon")], encoding="cp1252")
    result = cli("members", "import", str(path), "--encoding", "utf-8")
    assert result.exit_code == 2
    assert "line 2 is not valid utf-8" in result.stderr


# --- dry run, re-runs, conflicts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("skip", {"created": 2, "updated": 0, "skipped": 2, "invalid": 2}),
        ("update", {"created": 2, "updated": 1, "skipped": 1, "invalid": 2}),
    ],
)
def test_dry_run_reports_exactly_what_the_real_run_does(
    cli: Cli, session: Session, tmp_path: Path, mode: str, expected: dict[str, int]
) -> None:
    for serial in (20, 21):
        make_member(session, **{k: v for k, v in person(serial).items() if v is not None})
    rows = [
        person(20, email="nouveau@example.fr"),
        person(21),
        person(22),
        person(23, postcode="1"),
        person(22),
        person(24),
    ]
    path = write_csv(tmp_path / "m.csv", rows)
    before = snap(session)
    options = ("--on-conflict", mode, "--welcome-letters")
    dry = cli(
        "--json",
        "members",
        "import",
        str(path),
        "--dry-run",
        *options,
        "--errors",
        str(tmp_path / "dry.csv"),
    )
    human = cli("members", "import", str(path), "--dry-run", *options)
    assert snap(session) == before  # nothing written, not even an audit event
    assert human.stdout.startswith("Dry run, nothing written: would create 2,")
    real = cli(
        "--json", "members", "import", str(path), *options, "--errors", str(tmp_path / "real.csv")
    )
    assert (dry.exit_code, human.exit_code, real.exit_code) == (1, 1, 1)
    assert json_out(real) == {
        **expected,
        "welcome_letters": 2,
        "letters_voided": 0,
        "letters_queued_again": 0,
        "emailed_codes_revoked": 0,
        "dry_run": False,
    }
    assert json_out(dry) == {**json_out(real), "dry_run": True}
    assert report_rows(tmp_path / "dry.csv") == report_rows(tmp_path / "real.csv")
    assert [r["line"] for r in report_rows(tmp_path / "real.csv")] == ["5", "6"]
    assert snap(session) != before
    changed = mode == "update"
    assert (member_of(session, rows[0]["nir"]).email == "nouveau@example.fr") is changed


def test_running_the_same_file_again_changes_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "m.csv", [person(n) for n in range(30, 40)])
    first = cli("--json", "members", "import", str(path), "--welcome-letters")
    assert json_out(first)["created"] == 10
    tables = ("member", "account", "letter", "security_code", "outgoing_mail")
    before = {name: rows for name, rows in snap(session).items() if name in tables}
    for mode in ("skip", "update"):
        again = cli(
            "--json", "members", "import", str(path), "--welcome-letters", "--on-conflict", mode
        )
        assert again.exit_code == 0
        assert json_out(again) == {
            "created": 0,
            "updated": 0,
            "skipped": 10,
            "invalid": 0,
            "welcome_letters": 0,
            "letters_voided": 0,
            "letters_queued_again": 0,
            "emailed_codes_revoked": 0,
            "dry_run": False,
        }
        assert {n: r for n, r in snap(session).items() if n in tables} == before


def test_on_conflict_update_changes_fields_and_keeps_the_account(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    member = make_member(session, **{k: v for k, v in person(40).items() if v is not None})
    account = session.get(Account, member.id)
    assert account is not None
    account.failed_attempts = 2
    session.commit()
    moved = person(40, street="3 place Bellecour", postcode="69002", city="Lyon", email=None)
    path = write_csv(tmp_path / "m.csv", [moved])
    skipped = cli("--json", "members", "import", str(path))
    assert json_out(skipped)["skipped"] == 1
    assert member_of(session, member.nir).city == "Paris"
    updated = cli("--json", "members", "import", str(path), "--on-conflict", "update")
    assert json_out(updated)["updated"] == 1
    session.rollback()
    after = member_of(session, member.nir)
    assert (after.street, after.city, after.email) == ("3 place Bellecour", "Lyon", None)
    assert after.search_text == search_values(after)["search_text"]
    account = session.get(Account, member.id)
    assert account is not None and account.failed_attempts == 2


def test_an_update_keeps_the_fields_the_file_has_no_column_for(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A file of the required columns only: its rows update what they give, and the columns
    it lacks keep the member's values (an e-mail, a birth date, a complement), where they
    used to be cleared: the member's codes then went by post."""
    member = make_member(
        session,
        **{k: v for k, v in person(41, address_complement="Appartement 3").items() if v},
    )
    kept = ("email", "birth_date", "civility", "address_complement", "country")
    before = {name: getattr(member, name) for name in kept}
    assert all(before.values())
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    moved = person(41, street="3 place Bellecour", postcode="69002", city="Lyon")
    path = write_csv(tmp_path / "m.csv", [moved], columns=required)
    for dry_run in (["--dry-run"], []):
        command = ("--json", "members", "import", str(path), "--on-conflict", "update")
        counts = json_out(cli(*command, *dry_run))
        assert (counts["updated"], counts["invalid"]) == (1, 0)
    after = member_of(session, member.nir)
    assert {name: getattr(after, name) for name in kept} == before
    assert (after.street, after.city) == ("3 place Bellecour", "Lyon")
    assert after.search_text == search_values(after)["search_text"]


def test_each_json_line_says_which_fields_it_gives(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """JSON Lines have no header: a key a line leaves out keeps the member's value, a key
    only a later line gives is applied (the first line's keys used to decide for all)."""
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    first, second = (
        make_member(session, **{k: v for k, v in person(n).items() if v}) for n in (42, 43)
    )
    before = (first.email, second.email)
    assert all(before)
    lines = [
        {name: person(42)[name] for name in required} | {"city": "Lyon", "postcode": "69002"},
        {name: person(43)[name] for name in required} | {"email": "nouvelle@example.fr"},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", lines)
    counts = json_out(cli("--json", "members", "import", str(path), "--on-conflict", "update"))
    assert (counts["updated"], counts["invalid"]) == (2, 0)
    assert (member_of(session, first.nir).email, member_of(session, first.nir).city) == (
        before[0],
        "Lyon",
    )
    assert member_of(session, second.nir).email == "nouvelle@example.fr"
    cleared = write_jsonl(tmp_path / "c.jsonl", [lines[1] | {"email": None}])
    assert (
        json_out(cli("--json", "members", "import", str(cleared), "--on-conflict", "update"))[
            "updated"
        ]
        == 1
    )
    assert member_of(session, second.nir).email is None  # null clears, as an empty cell


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_without_country_updates_a_member_abroad(
    cli: Cli, session: Session, tmp_path: Path, fmt: str
) -> None:
    """A file without `country` keeps the member's country, and the rest of the row is
    judged with it: a Belgian postcode is right for a Belgian member. For a new member the
    country is France, and the same row is refused."""
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    member = make_member(
        session,
        **{k: v for k, v in person(44).items() if v} | brussels | {"country": "BE"},
    )
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    rows = [
        person(44, **brussels | {"street": "Rue de la Loi 18"}),
        person(45, **brussels),  # new: a French address, which this is not
    ]
    rows = [{name: row[name] for name in required} for row in rows]
    path = (
        write_csv(tmp_path / "m.csv", rows, columns=required)
        if fmt == "csv"
        else write_jsonl(tmp_path / "m.jsonl", rows)
    )
    errors = tmp_path / "errors.csv"
    for dry_run in (["--dry-run"], []):
        command = ("--json", "members", "import", str(path), "--on-conflict", "update")
        result = cli(*command, "--errors", str(errors), *dry_run)
        assert result.exit_code == 1, result.output
        counts = json_out(result)
        assert (counts["updated"], counts["created"], counts["invalid"]) == (1, 0, 1)
        [refused] = report_rows(errors)
        assert (refused["line"], refused["field"]) == ("3" if fmt == "csv" else "2", "postcode")
    after = member_of(session, member.nir)
    assert (after.street, after.postcode, after.country) == ("Rue de la Loi 18", "1000", "BE")
    skipping = cli("--json", "members", "import", str(path), "--on-conflict", "skip")
    assert json_out(skipping)["invalid"] == 2  # judged as French: skip reads no member


def test_a_row_refused_as_it_stands_leaves_the_member_to_the_row_that_fixes_it(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Each NIR belongs to its first valid line: a row that only the member's kept values
    could make valid takes it from no one, before or after it; with such a row and a valid
    one for the same member, the valid one is used. Found by an outside helper."""
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    rows = [
        {name: person(47, **brussels)[name] for name in required},  # new: judged as French
        {name: person(47)[name] for name in required},  # the row fixed
        {name: person(48)[name] for name in required},
        {name: person(48, **brussels)[name] for name in required},
    ]
    path = write_csv(tmp_path / "m.csv", rows, columns=required)
    errors = tmp_path / "errors.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert (json_out(result)["created"], json_out(result)["invalid"]) == (2, 2)
    assert [(row["line"], row["field"]) for row in report_rows(errors)] == [
        ("2", "postcode"),
        ("5", "postcode"),
    ]
    member = member_of(session, make_nir(47))
    bad_email = {name: person(47)[name] for name in required} | {"email": "pas-un-email"}
    lines = [
        bad_email,
        {name: person(47, city="Lyon", postcode="69002")[name] for name in required},
    ]
    jsonl = write_jsonl(tmp_path / "m.jsonl", lines)
    updated = cli("--json", "members", "import", str(jsonl), "--on-conflict", "update")
    assert (json_out(updated)["updated"], json_out(updated)["invalid"]) == (1, 1)
    assert member_of(session, member.nir).city == "Lyon"


@pytest.mark.parametrize("dry_run", [True, False])
def test_rows_refused_as_they_stand_are_judged_last_whatever_the_batches(
    cli: Cli, session: Session, tmp_path: Path, dry_run: bool
) -> None:
    """A row that only the member's kept values could make valid is judged once every row
    was read, against a member no other row changes: with a valid row of the same member
    anywhere in the file, or an earlier such row, it is refused, whichever batches they
    fall in; and a dry run counts what the run does. Found by an outside helper."""
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    belgian = make_member(
        session, **{k: v for k, v in person(56).items() if v} | brussels | {"country": "BE"}
    )
    other = make_member(session, **{k: v for k, v in person(57).items() if v})
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    lines = [
        {name: person(56, **brussels)[name] for name in required if name != "last_name"}
        | {"country": "DE", "postcode": "10115", "city": "Berlin"},  # no last_name: pending
        {name: person(58)[name] for name in required},
        {name: person(56, **brussels)[name] for name in required},  # pending: kept country
        {name: person(57)[name] for name in required if name != "first_name"},  # pending
        {name: person(59)[name] for name in required},
        {name: person(57, city="Lyon", postcode="69002")[name] for name in required},
    ]
    refused: list[tuple[int, str | None]] = []
    counts = import_members(
        session,
        member_file=read_member_rows(write_jsonl(tmp_path / "m.jsonl", lines)),
        agent="t",
        on_conflict="update",
        dry_run=dry_run,
        batch_size=2,
        on_error=lambda error: refused.append((error.line, error.field)),
    )
    assert (counts.created, counts.updated, counts.invalid) == (2, 2, 2)
    assert sorted(refused) == [(3, "postcode"), (4, "first_name")]
    if not dry_run:
        assert member_of(session, belgian.nir).country == "DE"
        assert member_of(session, other.nir).city == "Lyon"
        story = [event["action"] for event in audit_of(cli, other.nir)]
        assert story.count("members.import.member") == 1


def test_stderr_shows_the_file_s_first_rejected_lines_and_held_rows_get_their_notes(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """Rows judged with their member's values are refused last, yet stderr still lists the
    first lines of the file rejected, in order; one made valid that gives the civility Mlle
    gets the note any other row gets. Found by an outside helper."""
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    rows = [{name: person(n, **brussels)[name] for name in required} for n in range(60, 65)]
    rows += [  # a bad NIR: refused as they stand, before the rows above
        {name: person(n)[name] for name in required} | {"nir": f"1850575{n:08d}"}
        for n in range(65, 85)
    ]
    result = cli("members", "import", str(write_csv(tmp_path / "m.csv", rows, columns=required)))
    assert result.exit_code == 1
    shown = [
        int(line.split()[2].rstrip(":"))
        for line in result.stderr.splitlines()
        if line.startswith("Warning: line ")
    ]
    assert shown == list(range(2, 12)), result.stderr
    make_member(
        session,
        **{k: v for k, v in person(85).items() if v} | brussels | {"country": "BE"},
    )
    held = {name: person(85, **brussels)[name] for name in required} | {"civility": "Mlle"}
    path = write_jsonl(tmp_path / "m.jsonl", [held])
    noted = cli("members", "import", str(path), "--on-conflict", "update")
    assert noted.exit_code == 0, noted.output
    assert "1 row gives the civility Mlle" in noted.stderr, noted.stderr
    assert member_of(session, make_nir(85)).civility == "MME"
    again = cli("--json", "members", "import", str(path), "--on-conflict", "update")
    assert json_out(again)["skipped"] == 1  # the same file again records nothing: no note
    assert "Mlle" not in again.stderr, again.stderr


def test_the_mlle_note_counts_the_rows_recorded_not_those_skipped(cli: Cli, tmp_path: Path) -> None:
    rows = [person(n, civility="Mlle") for n in (1, 2)] + [person(3, civility="Mademoiselle")]
    path = write_csv(tmp_path / "m.csv", [*rows, person(4)])
    first = cli("members", "import", str(path))
    assert first.exit_code == 0, first.output
    assert "3 rows give the civility Mlle or Mademoiselle, recorded as MME" in first.stderr
    again = cli("--json", "members", "import", str(path))  # every member there: skipped
    assert json_out(again)["skipped"] == 4 and "Mlle" not in again.stderr, again.stderr


def test_a_json_line_giving_a_field_twice_is_refused(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """`email` and ` Email ` are one field, as a CSV header with both is refused: the line
    is refused rather than the last one silently winning."""
    member = make_member(session, **{k: v for k, v in person(49).items() if v})
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(person(49))[:-1] + ', " Email ": null}\n', encoding="utf-8")
    errors = tmp_path / "errors.csv"
    result = cli(
        "--json", "members", "import", str(path), "--on-conflict", "update", "--errors", str(errors)
    )
    assert json_out(result)["invalid"] == 1
    assert report_rows(errors)[0]["reason"] == "email is given twice"
    assert member_of(session, member.nir).email == member.email


def test_on_conflict_fail_stops_on_a_member_there_whatever_their_row(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A Belgian member already there, from a file without country: a conflict (exit 4,
    nothing imported), as for any member already there, not an invalid French postcode."""
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    brussels = {"street": "Rue de la Loi 16", "postcode": "1000", "city": "Bruxelles"}
    make_member(
        session, **{k: v for k, v in person(54).items() if v} | brussels | {"country": "BE"}
    )
    rows = [{name: person(n, **brussels)[name] for name in required} for n in (53, 54)]
    before = snap(session)
    result = cli(
        "members",
        "import",
        str(write_csv(tmp_path / "m.csv", rows, columns=required)),
        "--on-conflict",
        "fail",
    )
    assert result.exit_code == 4, result.output
    assert "(line 3); nothing was imported" in result.stderr
    assert snap(session) == before


def test_the_report_of_a_file_lacking_columns_imports_back_keeping_them(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The `--errors` report has the file's columns only: fixed and imported back with
    --on-conflict update, it leaves the member's e-mail, which the file did not have, as
    it is (an empty email column used to clear it)."""
    member = make_member(session, **{k: v for k, v in person(55).items() if v})
    assert member.email
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    row = {name: person(55, city="Lyon", postcode="69002")[name] for name in required}
    path = write_csv(tmp_path / "m.csv", [row | {"first_name": "J\u200bean"}], columns=required)
    errors = tmp_path / "errors.csv"
    cli("members", "import", str(path), "--on-conflict", "update", "--errors", str(errors))
    [refused] = report_rows(errors)
    assert list(refused) == ["line", "field", "reason", *required]
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(errors.read_text(encoding="utf-8-sig").replace("J\u200bean", "Jean"))
    counts = json_out(cli("--json", "members", "import", str(fixed), "--on-conflict", "update"))
    assert (counts["updated"], counts["invalid"]) == (1, 0)
    after = member_of(session, member.nir)
    assert (after.city, after.email) == ("Lyon", member.email)


def test_a_file_without_envelope_name_keeps_the_one_chosen(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A name too long for an envelope line needs the agent's `envelope_name`: a file
    without that column moves the member and keeps the line chosen."""
    long_name = {
        "last_name": "de La Rochefoucauld-Montmorency-Laval",
        "first_name": "Marie-Charlotte-Éléonore",
    }
    member = make_member(
        session,
        **{k: v for k, v in person(46, **long_name).items() if v},
        envelope_name="MME M-C DE LA ROCHEFOUCAULD",
    )
    required = ("nir", "last_name", "first_name", "street", "postcode", "city")
    path = write_csv(
        tmp_path / "m.csv",
        [person(46, **long_name, city="Lyon", postcode="69002")],
        columns=required,
    )
    counts = json_out(cli("--json", "members", "import", str(path), "--on-conflict", "update"))
    assert (counts["updated"], counts["invalid"]) == (1, 0)
    after = member_of(session, member.nir)
    assert (after.city, after.envelope_name) == ("Lyon", "MME M-C DE LA ROCHEFOUCAULD")


def test_on_conflict_fail_is_exit_4_and_writes_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    existing = make_member(session, **{k: v for k, v in person(50).items() if v is not None})
    path = write_csv(tmp_path / "m.csv", [person(51), person(52), person(50)])
    before = snap(session)
    for extra in ((), ("--dry-run",)):
        result = cli("members", "import", str(path), "--on-conflict", "fail", *extra)
        assert result.exit_code == 4, result.output
        assert result.stderr.startswith(
            "Error: 1 member of the file already exists, e.g. "
            f"{existing.nir[0]} {existing.nir[1:3]}"
        )
        assert "(line 4); nothing was imported" in result.stderr
        assert snap(session) == before
    fresh = write_csv(tmp_path / "fresh.csv", [person(51), person(52)])
    assert cli("members", "import", str(fresh), "--on-conflict", "fail").exit_code == 0
    assert count(session, Member) == 3


def test_bad_on_conflict_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [person(60)])
    result = cli("members", "import", str(path), "--on-conflict", "replace")
    assert result.exit_code == 2
    assert "--on-conflict must be skip, update or fail" in result.stderr


def test_welcome_letters_for_created_members_only(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    old = make_member(
        session, welcome=False, **{k: v for k, v in person(70).items() if v is not None}
    )
    path = write_csv(tmp_path / "m.csv", [person(70), person(71), person(72)])
    result = cli("--json", "members", "import", str(path), "--welcome-letters")
    assert json_out(result)["welcome_letters"] == 2
    session.rollback()
    letters = session.exec(select(Letter).order_by(col(Letter.id))).all()
    assert [(letter.kind, letter.purpose, letter.status) for letter in letters] == [
        ("welcome", "first_login", "pending")
    ] * 2
    assert old.id not in {letter.member_id for letter in letters}
    plain = write_csv(tmp_path / "n.csv", [person(73)])
    cli("members", "import", str(plain))
    assert count(session, Letter) == 2  # none unless asked


def test_a_run_has_its_event_then_a_closing_event_with_its_counts(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "m.csv", [person(n) for n in range(80, 85)] + [person(1, city="")])
    cli("members", "import", str(path))
    query = select(AuditEvent).where(AuditEvent.action == "members.import")
    started, closing = session.exec(query.order_by(col(AuditEvent.seq))).all()
    assert (started.label, started.outcome) == ("agent.test", "started")
    assert json.loads(started.details) == {
        "file": str(path),
        "format": "csv",
        "on_conflict": "skip",
        "welcome_letters": False,
    }
    assert (closing.label, closing.outcome) == ("agent.test", "partial")
    details = json.loads(closing.details)
    assert {k: details[k] for k in ("created", "skipped", "invalid", "run")} == {
        "created": 5,
        "skipped": 0,
        "invalid": 1,
        "run": started.id,
    }


def test_audit_list_nir_shows_the_imports_that_created_or_updated_the_member(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    first, second = person(86)["nir"], person(87)["nir"]
    path = write_csv(tmp_path / "m.csv", [person(86), person(87), person(88, postcode="1")])
    cli("members", "import", str(path), "--dry-run")
    assert count(session, Member) == 0 and audit_of(cli, first) == []  # a dry run: no event
    cli("members", "import", str(path))
    created = run_id(run_event(cli, "members.import"))
    (event,) = audit_of(cli, first)
    assert {k: event[k] for k in ("label", "action", "nir", "reason", "outcome", "details")} == {
        "label": "agent.test",
        "action": "members.import.member",
        "nir": first,
        "reason": None,
        "outcome": "ok",
        "details": {"change": "created", "run": created},
    }
    (run,) = [e for e in run_events(cli, "members.import") if e["id"] == created]
    assert event["at"] == run["at"]
    third = person(88)["nir"]
    rows = [person(86, email="nouveau@example.fr"), person(87), person(88, civility="MME")]
    cli("members", "import", str(write_csv(tmp_path / "u.csv", rows)), "--on-conflict", "update")
    updated = run_id(run_event(cli, "members.import"))
    assert [e["details"] for e in audit_of(cli, first)] == [
        {"change": "created", "run": created},
        {"change": "updated", "run": updated, "changed": ["email"]},
    ]  # which fields, as `member update` says, and never their values
    assert [e["details"] for e in audit_of(cli, third)] == [{"change": "created", "run": updated}]
    # Left as it was (skipped): the second run did not touch it, so it is not in its story.
    assert [e["details"]["run"] for e in audit_of(cli, second)] == [created]
    session.rollback()
    per_member = select(func.count()).where(AuditEvent.action == "members.import.member")
    assert session.exec(per_member).one() == 4  # none for the rejected line


def test_batches_see_repeats_and_members_of_earlier_batches(
    session: Session, tmp_path: Path
) -> None:
    rows = [person(n) for n in range(90, 97)] + [person(91), person(96, city="Lyon")]
    path = write_csv(tmp_path / "m.csv", rows)
    seen: list[int] = []
    counts = import_members(
        session,
        member_file=read_member_rows(path),
        agent="test",
        batch_size=2,
        on_progress=lambda c: seen.append(c.created),
    )
    assert (counts.created, counts.invalid) == (7, 2)
    assert seen == [2, 4, 6, 7, 7]  # committed batch by batch
    assert count(session, Member) == 7
    assert count(session, Account) == 7


def test_an_import_leaves_the_garbage_collector_as_it_found_it(
    session: Session, tmp_path: Path
) -> None:
    """An import collects garbage less often while it runs; a program that imports members
    in-process (a migration script) gets its own settings back, whether the run ended well
    or was refused."""
    before = gc.get_threshold()
    path = write_csv(tmp_path / "m.csv", [person(n) for n in range(1, 4)])
    import_members(session, member_file=read_member_rows(path), agent="test")
    assert gc.get_threshold() == before
    with pytest.raises(Conflict):
        import_members(
            session, member_file=read_member_rows(path), agent="test", on_conflict="fail"
        )
    assert gc.get_threshold() == before


def test_members_added_by_someone_else_mid_import_are_a_conflict(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`member add` commits one of the NIRs between the look-up and the insert (a race only
    PostgreSQL's concurrency allows; other imports wait for the batch): exit 4 with what to
    do, not a database error."""
    make_member(session, **{k: v for k, v in person(60).items() if v is not None})
    monkeypatch.setattr("cpms_admin.bulk.importer.find_existing", lambda *a, **k: {})
    result = cli("members", "import", str(write_csv(tmp_path / "m.csv", [person(60)])))
    assert result.exit_code == 4, result.output
    assert "added by someone else during the import" in result.stderr
    assert result.stderr.rstrip().endswith("run the same import again to finish")


def test_the_errors_report_keeps_formulas_inert(cli: Cli, tmp_path: Path) -> None:
    rows = [person(70, last_name="=1+1", city="@SUM(A1)")]
    errors = tmp_path / "rejected.csv"
    result = cli("members", "import", str(write_csv(tmp_path / "m.csv", rows)), "--errors",
                 str(errors))  # fmt: skip
    assert result.exit_code == 1
    (row,) = report_rows(errors)
    assert (row["field"], row["last_name"], row["city"]) == ("last_name", "'=1+1", "'@SUM(A1)")
