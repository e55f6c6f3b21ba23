"""Limits of a member file (columns, line length, file size), each checked in time linear in
what it reads: a wrong or hostile file is refused in seconds, in one line."""

import time
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from cpms_admin.bulk import formats, readers, sniff
from cpms_admin.bulk.formats import SourceRow, read_member_rows
from cpms_admin.bulk.readers import check_header
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS
from tests.import_helpers import DUPONT, write_jsonl


def timed(call: object) -> tuple[float, str]:
    """Seconds taken, and the one-line message of the InvalidInput raised."""
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as refused:
        call()  # type: ignore[operator]
    return time.perf_counter() - started, str(refused.value)


def test_the_header_check_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the column limit, 40,000 repeated unknown names: the check that took 26 s.
    monkeypatch.setattr(readers, "MAX_COLUMNS", 10**6)
    names = [*COLUMNS, *(f"c{n % 20_000}" for n in range(40_000))]
    seconds, message = timed(lambda: check_header(names, path=Path("wide.csv")))
    assert seconds < 1
    assert message.startswith("wide.csv: unknown columns: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9")
    assert "and 39,990 more; repeated columns: c0, c1" in message
    assert message.endswith("and 19,990 more")


def test_a_header_wider_than_a_spreadsheet_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(COLUMNS) + "," * 40_000 + "\n")  # 40,000 trailing separators
    seconds, message = timed(lambda: read_member_rows(path))
    assert seconds < 1
    assert message.endswith(
        "wide.csv: the header has 40,014 columns, more than a spreadsheet holds (16,384): "
        "not a member file"
    )


def test_a_million_column_header_is_refused_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text(";".join(f"col{n}" for n in range(10**6)) + "\n" + "x;" * 10 + "\n")
    seconds, message = timed(lambda: read_member_rows(path))
    assert seconds < 2
    assert message.endswith(
        "huge.csv: the header is longer than 65,536 characters (more than 8,331 columns; a "
        "spreadsheet holds 16,384): not a member file"
    )


@pytest.mark.parametrize("fmt", ["jsonl", None])
def test_a_json_lines_file_whose_first_record_is_too_long_says_so(
    tmp_path: Path, fmt: str | None
) -> None:
    """JSON Lines has no header: its columns are the first record's keys."""
    path = tmp_path / "long.jsonl"
    path.write_text('{"nir": "185057800608491", "last_name": "' + "A" * 70_000 + '"}\n')
    with pytest.raises(InvalidInput) as refused:
        read_member_rows(path, fmt=fmt)
    assert str(refused.value) == (
        f"{path}: line 1 is longer than 65,536 characters, which no member's record is: the "
        "columns are read from it, so the file cannot be"
    )


def test_a_workbook_header_wider_than_a_spreadsheet_is_refused(tmp_path: Path) -> None:
    # No spreadsheet writes more than 16,384 columns: this sheet is made by hand.
    made = tmp_path / "made.xlsx"
    book = Workbook()
    book.save(made)
    cells = "".join(f'<c t="inlineStr"><is><t>{name}</t></is></c>' for name in COLUMNS)
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<sheetData><row r="1">{cells}{"<c/>" * 20_000}<c t="inlineStr"><is><t>x</t></is>'
        "</c></row></sheetData></worksheet>"
    )
    path = tmp_path / "wide.xlsx"
    with zipfile.ZipFile(made) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, sheet if item.filename.endswith("sheet1.xml") else data)
    seconds, message = timed(lambda: read_member_rows(path))
    assert seconds < 5
    assert message.endswith(
        "wide.xlsx: the header has 20,015 columns, more than a spreadsheet holds (16,384): "
        "not a member file"
    )


def test_too_long_lines(tmp_path: Path) -> None:
    row = ",".join(DUPONT[name] or "" for name in COLUMNS)
    long_line = row + "," + "x" * 70_000
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("\n".join([",".join(COLUMNS), long_line, row]) + "\n")
    assert list(read_member_rows(csv_path)) == [
        SourceRow(2, None, "line longer than 65,536 characters"),  # skipped, never read whole
        SourceRow(3, DUPONT),
    ]
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(",".join(COLUMNS) + '\n"' + "a\n" + "y" * 70_000 + '"\n')
    with pytest.raises(InvalidInput, match=r"lines 2-3: a line longer than 65,536 characters"):
        read_member_rows(quoted).check_records()
    # Opened on the long line and closed on a later one: the lines between are the quoted
    # value's, not members (read as records once the long line was skipped).
    opening = tmp_path / "opening.csv"
    opening.write_text(",".join(COLUMNS) + '\n"' + "y" * 70_000 + "\n" + row + '\nend"\n')
    with pytest.raises(InvalidInput, match=r"line 2: a line longer than 65,536 characters opens"):
        read_member_rows(opening).check_records()
    closed = tmp_path / "closed.csv"  # a long quoted value on its line, a "" inside
    closed.write_text(",".join(COLUMNS) + '\n"' + 'y""' * 30_000 + '"\n' + row + "\n")
    assert list(read_member_rows(closed)) == [
        SourceRow(2, None, "line longer than 65,536 characters"),
        SourceRow(3, DUPONT),
    ]
    jsonl = write_jsonl(tmp_path / "m.jsonl", [DUPONT, {"nir": "x" * 70_000}, DUPONT])
    assert [row.problem for row in read_member_rows(jsonl)] == [
        None,
        "longer than 65,536 characters",
        None,
    ]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sniff, "MAX_FILE_BYTES", 1 << 20)
    path = tmp_path / "big.csv"
    path.write_bytes(b"\xff" * (3 << 20))  # not even decodable: never read
    _, message = timed(lambda: formats.read_member_rows(path))
    assert message.endswith(
        "big.csv: the file is 3 MiB, more than a member file may be (1 MiB): split it and "
        "import the parts one after the other"
    )


def test_a_zip_bomb_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    made = tmp_path / "made.xlsx"
    Workbook().save(made)
    path = tmp_path / "bomb.xlsx"
    row = "".join(f'<c t="inlineStr"><is><t>{name}</t></is></c>' for name in COLUMNS)
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<sheetData><row r="1">{row}{"<c/>" * 10**6}</row></sheetData></worksheet>'
    )
    with zipfile.ZipFile(made) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zip_:
        for item in source.infolist():
            data = source.read(item)
            zip_.writestr(item.filename, sheet if item.filename.endswith("sheet1.xml") else data)
    assert path.stat().st_size < 20_000  # 4 MB of XML: a 10^6-column header
    seconds, message = timed(lambda: read_member_rows(path))
    assert seconds < 1
    assert "bomb.xlsx: its part xl/worksheets/sheet1.xml unzips to " in message
    assert message.endswith(
        "times its size, which no spreadsheet's workbook does: not a member file"
    )
