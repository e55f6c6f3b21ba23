"""XLSX both ways: workbooks as spreadsheets save them (numbers where text was, date cells,
blank rows), text cells on export so Excel converts nothing, the same bytes for the same
members, and rows read in a helper process with flat memory."""

import csv
import io
import json
import re
import tracemalloc
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from sqlmodel import Session

from cpms_admin.bulk.formats import SourceRow, open_member_writer, read_member_rows
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.bulk.xlsx.read import filled_rows, forked
from cpms_admin.bulk.xlsx.sheet import column_letters
from cpms_admin.errors import InvalidInput, Refused
from cpms_admin.members.fields import COLUMNS
from tests.cred_helpers import LEGACY
from tests.factories import make_member, make_nir
from tests.harness import Cli, FakeClock
from tests.import_helpers import (
    DUPONT,
    damage_sheet,
    json_out,
    member_of,
    person,
    report_rows,
    write_xlsx,
)

BOURG = {"postcode": "01000", "city": "Bourg-en-Bresse"}


def test_a_workbook_with_numbers_for_nirs_and_postcodes_imports_as_typed(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    # What a spreadsheet saves when the NIR and postcode columns are not Text: numbers.
    rows = [
        person(1, **BOURG, birth_date=date(1985, 5, 12)),  # a date cell
        person(2, postcode="75011", birth_date="1985-05-20"),
    ]
    path = write_xlsx(tmp_path / "adherents.xlsx", rows, numbers=("nir", "postcode"))
    check = load_workbook(path)["Sheet"]
    assert isinstance(check["A2"].value, int) and check["I2"].value == 1000  # really numbers
    result = cli("--json", "members", "import", str(path))
    assert result.exit_code == 0, result.output
    assert json_out(result)["created"] == 2
    first = member_of(session, rows[0]["nir"])
    assert (first.nir, first.postcode, first.birth_date) == (
        rows[0]["nir"],
        "01000",  # the zero put back: 01000 is Bourg-en-Bresse's
        date(1985, 5, 12),
    )
    assert member_of(session, rows[1]["nir"]).postcode == "75011"


def test_rows_keep_the_spreadsheets_numbers_and_skip_blank_rows(tmp_path: Path) -> None:
    rows = [person(1), {}, person(2, email=None)]
    path = write_xlsx(tmp_path / "m.xlsx", rows, numbers=("nir",), blank_rows=2)
    member_file = read_member_rows(path)
    assert (member_file.fmt, member_file.encoding, member_file.delimiter) == ("xlsx", None, None)
    assert member_file.columns == COLUMNS
    assert list(member_file) == [SourceRow(4, rows[0]), SourceRow(6, {**rows[2], "email": None})]


def test_what_a_spreadsheet_did_to_a_number_is_named(cli: Cli, tmp_path: Path) -> None:
    rows = [
        person(1, nir="185058000000000"),  # 1,85058E+14 typed back, or a rounded number
        person(2, postcode="1000"),  # 01000 is not in Paris
        person(3, birth_date="31179"),  # a date cell that lost its format
    ]
    path = write_xlsx(tmp_path / "m.xlsx", rows, numbers=("nir", "postcode", "birth_date"))
    errors = tmp_path / "rejets.csv"
    result = cli("members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1
    reasons = [row["reason"] for row in report_rows(errors)]
    assert reasons[0] == (
        "invalid NIR '185058000000000': a spreadsheet rounded it as a number (shown as "
        "1,85058E+14); no NIR ends in 00, and its last digits are lost: take the NIR from the "
        "original file; to avoid it, give this column the Text format before the values go in "
        "(a CSV: in the dialog that opens it), or export with `members export --excel` or "
        "`--format xlsx`, which keep it as text"
    )
    assert reasons[1].startswith(
        "postcode '1000' must be 5 digits: if a spreadsheet dropped its leading zero, 01000 "
        "is not a postcode of Paris either, so check it; to avoid it"
    )
    assert reasons[2].startswith(
        "birth date '31179' is a spreadsheet's serial number for a date (1985-05-12?): the "
        "column lost its date format; write it YYYY-MM-DD;"
    )
    assert [row["line"] for row in report_rows(errors)] == ["2", "3", "4"]


UNCALCULATED = (
    "holds a formula without its result (the file was written by a program that does not "
    "compute formulas): open it in a spreadsheet and save it again, or paste the values"
)


def test_formulas_written_without_their_results_are_rejected_rows(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """openpyxl writes a formula with an empty result (`<f>...</f><v></v>`): its value is
    unknown, not empty, so its row is rejected with the formula's column, whichever column
    it is in, even when it is the row's only cell."""
    rows = [
        person(1, email='=LOWER("EVE@EXAMPLE.ORG")', address_complement='=CONCATENATE("A"," 5")'),
        person(2, last_name='=UPPER("garnier")'),
        {"email": '=LOWER("EVE@EXAMPLE.ORG")'},
        person(4),
    ]
    path = write_xlsx(tmp_path / "formulas.xlsx", rows)
    uncalculated = load_workbook(path, data_only=True)["Sheet"]
    assert [uncalculated[cell].value for cell in ("F2", "H2", "C3", "F4")] == [None] * 4
    errors = tmp_path / "rejets.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert (json_out(result)["created"], json_out(result)["invalid"]) == (1, 3)
    assert [(row["line"], row["reason"]) for row in report_rows(errors)] == [
        ("2", f"the cell in column F (email) {UNCALCULATED}"),
        ("3", f"the cell in column C (last_name) {UNCALCULATED}"),
        ("4", f"the cell in column F (email) {UNCALCULATED}"),
    ]
    assert member_of(session, rows[3]["nir"]).email == DUPONT["email"]
    # A row refused for one cell gives back its other values, that cell empty: filled in,
    # the report imports as it is. A row with two such cells gives back none: its reason
    # names the first, and the other, left empty, would import as empty.
    first, garnier, _ = report_rows(errors)
    assert {name: value for name, value in first.items() if value} == {
        "line": "2", "field": "email", "reason": first["reason"],
    }  # fmt: skip
    assert garnier == {
        "line": "3", "field": "last_name", "reason": garnier["reason"],
        **{name: str(rows[1].get(name) or "") for name in COLUMNS if name in garnier},
        "last_name": "",
    }  # fmt: skip
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(garnier))
        writer.writeheader()
        writer.writerow({**garnier, "last_name": "GARNIER"})
    again = cli("--json", "members", "import", str(fixed))
    assert (again.exit_code, json_out(again)["created"]) == (0, 1), again.output
    assert member_of(session, rows[1]["nir"]).last_name == "GARNIER"


def test_a_surname_a_spreadsheet_made_true_or_false_is_refused_not_imported_as_false(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """French Excel turns a surname typed `Faux` into the value FAUX (FALSE): that row is
    refused naming the cell, never imported as a member called FALSE; the others are."""
    rows = [person(1, last_name=False), person(2)]  # what the workbook holds
    path = write_xlsx(tmp_path / "excel.xlsx", rows)
    errors = tmp_path / "rejets.csv"
    result = cli("--json", "members", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert (json_out(result)["created"], json_out(result)["invalid"]) == (1, 1)
    [refused] = report_rows(errors)
    assert (refused["line"], refused["field"], refused["last_name"]) == ("2", "last_name", "")
    assert refused["reason"].startswith(
        "the cell in column C (last_name) holds 'FALSE', a true-or-false value (VRAI or FAUX in "
        "French), not text"
    )
    assert refused["first_name"] == rows[0]["first_name"]  # given back, to fill in and import
    assert member_of(session, rows[1]["nir"]).last_name == rows[1]["last_name"]


def test_a_pin_hash_in_a_cell_of_another_type_is_refused_without_quoting_it(
    cli: Cli, tmp_path: Path
) -> None:
    """A cell that cannot be read as its type is quoted in the refusal, but not a PIN hash:
    neither stderr nor the `--errors` report holds any of it."""
    secret = LEGACY["bcrypt-2b"]()
    columns = (*COLUMNS, "pin_hash")
    path = write_xlsx(tmp_path / "m.xlsx", [person(1, pin_hash=secret)], columns=columns)
    column = column_letters(len(columns))

    def as_a_number(xml: bytes) -> bytes:
        cell = re.compile(rf'<c r="{column}2" t="inlineStr"><is><t>[^<]+</t></is></c>'.encode())
        damaged, found = cell.subn(f'<c r="{column}2"><v>{secret}</v></c>'.encode(), xml)
        assert found == 1
        return damaged

    damaged = damage_sheet(path, tmp_path / "damaged.xlsx", as_a_number)
    errors = tmp_path / "rejets.csv"
    result = cli("members", "import", str(damaged), "--errors", str(errors))
    assert result.exit_code == 1, result.output
    assert (
        f"line 2: the cell in column {column} (pin_hash) cannot be read (it holds a PIN hash, "
        "which is not a value of its type)"
    ) in result.stderr
    (row,) = report_rows(errors)
    assert row["last_name"] == "Dupont"  # the row's other values, to fix it
    for text in (result.stdout, result.stderr, errors.read_text()):
        assert secret[7:22] not in text  # any part of its salt


def test_a_title_row_above_the_column_names_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "m.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([None])
    sheet.append(["Adhérents au 1er décembre"])
    sheet.append(list(COLUMNS))
    book.save(path)
    with pytest.raises(InvalidInput) as refused:
        read_member_rows(path)
    assert str(refused.value).endswith(
        "(row 2, the sheet's first with a value, is read as the column names: delete a title "
        "row above them)"
    )
    assert "--delimiter" not in str(refused.value)
    sheet.delete_rows(1, 3)
    sheet.append(["nir"])  # a header of one known column: no title row to speak of
    book.save(path)
    with pytest.raises(InvalidInput) as lacking:
        read_member_rows(path)
    assert str(lacking.value).endswith(
        "missing required columns: last_name, first_name, street, postcode, city"
    )


def test_a_birth_date_cell_with_a_time_of_day_is_refused_naming_the_day(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A date cell is read as its date; a date-and-time cell (=NOW(), a pasted moment) is no
    birth date, and the refusal gives the day it holds."""
    rows = [
        person(1, birth_date=datetime(1985, 5, 12, 13, 45)),
        person(2, birth_date=date(1985, 5, 12)),
    ]
    errors = tmp_path / "rejets.csv"
    result = cli(
        "members", "import", str(write_xlsx(tmp_path / "m.xlsx", rows)), "--errors", str(errors)
    )
    assert result.exit_code == 1, result.output
    [row] = report_rows(errors)
    assert (row["line"], row["field"], row["reason"]) == (
        "2", "birth_date", "birth date '1985-05-12T13:45:00' holds a time of day: the cell was "
        "a date and time; give the day alone, 1985-05-12 (a date format without the hours)",
    )  # fmt: skip
    assert member_of(session, rows[1]["nir"]).birth_date == date(1985, 5, 12)


def test_the_sheet_read_is_the_first_one_a_spreadsheet_shows(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """A hidden first sheet (an old copy kept out of sight) is not the members' list."""
    book = Workbook()
    old = book.active
    assert old is not None
    old.title, old.sheet_state = "Ancien", "hidden"
    shown = book.create_sheet("Adhérents")
    for sheet, street in ((old, "1 rue de la Paix"), (shown, "50 avenue Foch")):
        sheet.append(list(COLUMNS))
        sheet.append([person(1, street=street).get(column) for column in COLUMNS])
    book.active = 1
    book.save(path := tmp_path / "deux.xlsx")
    result = cli("--json", "members", "import", str(path))
    assert result.exit_code == 0, result.output
    assert member_of(session, person(1)["nir"]).street == "50 avenue Foch"


def test_a_value_under_no_column_is_a_row_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([*COLUMNS, None, "pin_hash"])
    sheet.append([DUPONT[name] for name in COLUMNS] + ["oops"])
    sheet.append([DUPONT[name] for name in COLUMNS] + [None, None, None, "beyond"])
    sheet.append([DUPONT[name] for name in COLUMNS])
    book.save(path)
    assert list(read_member_rows(path)) == [
        SourceRow(2, None, "a value in column O, which has no name"),
        SourceRow(3, None, "a value in column R, which has no name"),
        SourceRow(4, DUPONT),
    ]


def test_what_is_not_a_readable_workbook_is_refused_in_one_line(tmp_path: Path) -> None:
    workbook = write_xlsx(tmp_path / "m.xlsx", [person(1)])
    renamed = tmp_path / "m.dat"
    renamed.write_bytes(workbook.read_bytes())
    assert read_member_rows(renamed).fmt == "xlsx"  # a ZIP archive: found by its content
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 100)
    fake = tmp_path / "fake.xlsx"
    fake.write_text("nir,last_name\n")
    empty = tmp_path / "empty.xlsx"
    Workbook().save(empty)
    ods = tmp_path / "adherents.ods"  # what LibreOffice saves: its type first, stored
    with zipfile.ZipFile(ods, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", "<office:document-content/>")
    cases: list[tuple[Path, dict[str, str], str]] = [
        (workbook, {"fmt": "csv"}, r"m\.xlsx: a ZIP archive, not csv: .*--format xlsx$"),
        (workbook, {"encoding": "cp1252"}, "--encoding and --delimiter are for CSV"),
        (old, {}, r"an old Excel \.xls workbook, or an encrypted one: save it as \.xlsx"),
        (fake, {}, r"fake\.xlsx: not a workbook that can be read \(BadZipFile: .*\); save it"),
        (empty, {}, "the first sheet is empty; a header row is expected"),
        (ods, {}, r"adherents\.ods: an OpenDocument spreadsheet .*: save it as \.xlsx"),
    ]
    for path, options, message in cases:
        with pytest.raises(InvalidInput, match=message):
            read_member_rows(path, **options)


def test_a_damaged_sheet_fails_the_reading_process_with_one_line(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "m.xlsx", [person(n) for n in range(1, 30)])
    # The XML stops half-way.
    broken = damage_sheet(path, tmp_path / "broken.xlsx", lambda xml: xml[: len(xml) // 2])
    member_file = read_member_rows(broken)  # the header is whole
    with pytest.raises(InvalidInput, match=r"broken\.xlsx: not a workbook that can be read"):
        list(member_file)


def test_the_helper_process_hands_over_its_errors_and_is_stopped_early() -> None:
    def failing() -> Any:
        yield 1
        raise InvalidInput("bad file")

    def buggy() -> Any:
        yield 1
        raise KeyError("x")

    with pytest.raises(InvalidInput, match="bad file"):
        list(forked(failing))
    with pytest.raises(Refused, match=r"the reading helper failed \(KeyError: 'x'\)"):
        list(forked(buggy))
    endless = forked(lambda: iter(range(10**9)))
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()  # kills and reaps the child: no process is left behind


def exported(cli: Cli, tmp_path: Path, name: str = "m.xlsx") -> Path:
    out = tmp_path / name
    result = cli("--json", "members", "export", "--format", "xlsx", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["format"] == "xlsx"
    return out


def test_the_export_writes_text_cells_formatted_as_text(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    member = make_member(session, **BOURG, birth_date="1985-05-12", nir=make_nir(1))
    cli("member", "close", member.nir, "--reason", "décès")
    sheet = load_workbook(exported(cli, tmp_path))["members"]
    assert [cell.value for cell in sheet[1]] == list(EXPORT_COLUMNS)
    row = {name: cell for name, cell in zip(EXPORT_COLUMNS, sheet[2], strict=True)}
    for name, value in (
        ("nir", member.nir),
        ("postcode", "01000"),
        ("birth_date", "1985-05-12"),
        ("closed_at", "2026-11-23T09:00:00+00:00"),
    ):
        assert (row[name].value, row[name].data_type, row[name].number_format) == (value, "s", "@")
    assert (row["status"].value, row["closed_reason"].value) == ("closed", "décès")
    assert sheet.column_dimensions["A"].number_format == "@"  # a NIR typed later stays text
    assert sheet.max_row == 2 and sheet.calculate_dimension() == "A1:Q2"


def test_the_same_members_make_the_same_bytes(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    make_member(session, nir=make_nir(1))
    first = exported(cli, tmp_path, "first.xlsx")
    clock.advance(days=400)
    second = exported(cli, tmp_path, "second.xlsx")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {item.date_time for item in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = archive.read("docProps/core.xml").decode()
    assert "1980-01-01T00:00:00Z" in core and "cpms-admin" in core


def test_a_workbook_on_stdout_and_excel_are_told_apart(cli: Cli, session: Session) -> None:
    make_member(session, nir=make_nir(1))
    result = cli("members", "export", "--format", "xlsx")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"PK\x03\x04")
    assert load_workbook(io.BytesIO(result.stdout_bytes))["members"].max_row == 2
    refused = cli("members", "export", "--format", "xlsx", "--excel")
    assert refused.exit_code == 2
    assert "--excel makes a CSV for Excel; for a workbook, give --format xlsx" in refused.stderr


def test_a_workbook_states_the_rows_it_counted() -> None:
    out = io.BytesIO()
    writer = open_member_writer(out, fmt="xlsx", rows=2)
    writer.write(DUPONT)
    with pytest.raises(Refused, match="1 members written where 2 were counted"):
        writer.close()


def workbook_rows(count: int) -> Any:
    return ({**DUPONT, "nir": make_nir(n), "status": "active"} for n in range(1, count + 1))


@pytest.mark.slow
def test_writing_and_reading_a_workbook_keep_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.xlsx"
    tracemalloc.start()
    try:
        with path.open("wb") as out, open_member_writer(out, fmt="xlsx", rows=4_000) as writer:
            for row in workbook_rows(4_000):
                writer.write(row)
        _, written = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        rows = filled_rows(path, 2)  # what the helper process runs, here to be traced
        for _ in range(2_000):
            next(rows)
        _, read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 2,000 rows hold about 2 MB; the writer's own buffers (zlib's) about 2.5 MB, the reader's
    # about 0.6 MB, whatever the size.
    assert written < 3_000_000 and read < 1_500_000
    assert 2_000 + sum(1 for _ in rows) == 4_000
