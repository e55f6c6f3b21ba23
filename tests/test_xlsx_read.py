"""Reading workbooks as Excel and LibreOffice write them, part by part: the first sheet found
through the workbook, shared strings with rich-text runs and phonetic readings, cells left
out, typed cells, both date systems; the same values as openpyxl's read-only mode gave; and
the limits (a row too long, a cell past the last column, a DTD)."""

import zipfile
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from cpms_admin.bulk.cells import cell_text
from cpms_admin.bulk.formats import SourceRow, read_member_rows
from cpms_admin.bulk.xlsx.read import filled_rows
from cpms_admin.bulk.xlsx.sheet import RowProblem
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS
from tests.import_helpers import DUPONT

TRANSITIONAL = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
)
STRICT = (
    "http://purl.oclc.org/ooxml/spreadsheetml/main",
    "http://purl.oclc.org/ooxml/officeDocument/relationships",
)
PACKAGE = "http://schemas.openxmlformats.org/package/2006/relationships"
HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
# Excel's shared strings: plain, bold "Du" + "pont" (runs), a reading in <rPh>, spaces kept.
STRINGS = [
    *(f"<si><t>{name}</t></si>" for name in COLUMNS),
    '<si><r><rPr><b/><sz val="11"/></rPr><t>Du</t></r><r><t xml:space="preserve">pont</t></r></si>',
    '<si><t xml:space="preserve">12 rue des Lilas </t><rPh sb="0" eb="2"><t>ジュウニ</t></rPh>'
    '<phoneticPr fontId="1"/></si>',
    "<si><t>jean.dupont@example.fr</t></si>",
]
LAST_NAME, STREET, EMAIL = len(COLUMNS), len(COLUMNS) + 1, len(COLUMNS) + 2


def excel_workbook(
    path: Path,
    rows: str,
    *,
    spaces: tuple[str, str] = TRANSITIONAL,
    date1904: bool = False,
    strings: tuple[str, ...] = (),
) -> Path:
    """A workbook whose parts are written as Excel writes them. Its first sheet is the part
    xl/worksheets/sheet2.xml, after a chart sheet and before another worksheet."""
    main, relations = spaces
    sheets = [("rId3", "chartsheet", "chartsheets/sheet1.xml", "Graphique")]
    sheets += [("rId1", "worksheet", "worksheets/sheet2.xml", "Adhérents")]
    sheets += [("rId2", "worksheet", "/xl/worksheets/sheet1.xml", "Brouillon")]
    related = [(rid, part, target) for rid, part, target, _ in sheets] + [
        ("rId4", "sharedStrings", "sharedStrings.xml"),
        ("rId5", "styles", "styles.xml"),
    ]
    parts = {
        "_rels/.rels": f'<Relationships xmlns="{PACKAGE}"><Relationship Id="rId1" '
        f'Type="{relations}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<workbook xmlns="{main}" xmlns:r="{relations}">'
        f'<workbookPr date1904="{int(date1904)}" defaultThemeVersion="166925"/><sheets>'
        + "".join(
            f'<sheet name="{name}" sheetId="{at}" r:id="{rid}"/>'
            for at, (rid, _, _, name) in enumerate(sheets, start=1)
        )
        + "</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{PACKAGE}">'
        + "".join(
            f'<Relationship Id="{rid}" Type="{relations}/{part}" Target="{target}"/>'
            for rid, part, target in related
        )
        + "</Relationships>",
        "xl/sharedStrings.xml": f'<sst xmlns="{main}">{"".join(STRINGS + list(strings))}</sst>',
        # Styles: 0 General, 1 a custom date format (id 164), 2 Text; a differential
        # format's numFmt (conditional formatting) is not a cell style.
        "xl/styles.xml": f'<styleSheet xmlns="{main}"><numFmts count="1">'
        '<numFmt numFmtId="164" formatCode="dd/mm/yyyy;@"/></numFmts>'
        '<cellStyleXfs count="1"><xf numFmtId="0"/></cellStyleXfs><cellXfs count="3">'
        '<xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/>'
        '<xf numFmtId="49" applyNumberFormat="1"/></cellXfs><dxfs count="1"><dxf>'
        '<numFmt numFmtId="165" formatCode="yyyy"/></dxf></dxfs></styleSheet>',
        "xl/worksheets/sheet2.xml": f'<worksheet xmlns="{main}" xmlns:r="{relations}">'
        f'<dimension ref="A1:N9"/><sheetData>{rows}</sheetData></worksheet>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData><row r="1">'
        '<c r="A1" t="inlineStr"><is><t>not this sheet</t></is></c></row></sheetData>'
        "</worksheet>",
        "xl/chartsheets/sheet1.xml": f'<chartsheet xmlns="{main}"/>',
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, xml in parts.items():
            archive.writestr(name, HEAD + xml)
    return path


HEADER = (
    '<row r="1" spans="1:14">'
    + "".join(f'<c r="{chr(65 + at)}1" t="s"><v>{at}</v></c>' for at in range(len(COLUMNS)))
    + "</row>"
)
# Dupont as a spreadsheet saved him: the NIR and postcode as numbers, the birth date a
# number in a date format, the civility a formula's text, the first name an inline string,
# no cell for the address complement (H) nor the columns after the country.
DUPONT_ROW = (
    '<row r="3" spans="1:14"><c r="A3" s="0"><v>185057800608491</v></c>'
    '<c r="B3" t="str"><f>UPPER("m")</f><v>M</v></c>'
    f'<c r="C3" t="s"><v>{LAST_NAME}</v></c>'
    '<c r="D3" t="inlineStr"><is><t>Jean</t></is></c>'
    '<c r="E3" s="1"><v>{serial}</v></c>'
    f'<c r="F3" t="s"><v>{EMAIL}</v></c><c r="G3" s="2" t="s"><v>{STREET}</v></c>'
    '<c r="I3" t="n"><v>75011</v></c><c r="J3" t="inlineStr"><is><t>Paris</t></is></c>'
    '<c r="K3" t="inlineStr"><is><t>FR</t></is></c></row>'
)


@pytest.mark.parametrize(
    ("spaces", "date1904", "serial"),
    [(TRANSITIONAL, False, 31179), (STRICT, False, 31179), (TRANSITIONAL, True, 29717)],
)
def test_a_workbook_as_excel_writes_it(
    tmp_path: Path, spaces: tuple[str, str], date1904: bool, serial: int
) -> None:
    rows = HEADER + '<row r="2"/>' + DUPONT_ROW.replace("{serial}", str(serial))
    path = excel_workbook(tmp_path / "m.xlsx", rows, spaces=spaces, date1904=date1904)
    member_file = read_member_rows(path)
    assert member_file.columns == COLUMNS
    assert list(member_file) == [SourceRow(3, {**DUPONT, "street": "12 rue des Lilas"})]
    # The cells as read: the spaces kept until the import strips them, the gap as None.
    assert next(filled_rows(path, 3))[1] == [
        "185057800608491",
        "M",
        "Dupont",
        "Jean",
        "1985-05-12",
        "jean.dupont@example.fr",
        "12 rue des Lilas ",
        None,
        "75011",
        "Paris",
        "FR",
    ]


def test_cells_without_references_booleans_errors_and_numbers(tmp_path: Path) -> None:
    # Cells may come without `r` (openpyxl reads them in order, and so does this reader);
    # the values are those openpyxl gave, as cells.cell_text writes them. A true-or-false
    # cell is no member's value: its row is a problem naming it (a surname Faux is FALSE).
    cells = [
        '<c t="inlineStr"><is><t>x</t></is></c>',
        '<c t="e"><f>1/0</f><v>#DIV/0!</v></c>',
        "<c><v>1.85058E+14</v></c>",
        "<c><v>0.1</v></c>",
        "<c><v>-3</v></c>",
        '<c s="1"><v>31179.5</v></c>',  # a date format on a moment: 12:00 that day
        "<c/>",
        '<c t="str"><f>A1</f><v></v></c>',  # a formula whose result is empty
        '<c t="s"><v></v></c>',
    ]
    booleans = '<c t="inlineStr"><is><t>Martin</t></is></c><c t="b"><v>0</v></c>'
    rows = HEADER + f'<row r="2">{"".join(cells)}</row><row r="3">{booleans}</row>'
    path = excel_workbook(tmp_path / "m.xlsx", rows)
    [read, (number, problem)] = filled_rows(path, 2)
    assert read == (
        2,
        [
            "x",
            "#DIV/0!",
            "185058000000000",
            "0.1",
            "-3",
            "1985-05-12T12:00:00",
            None,
            None,
            None,
        ],
    )
    assert number == 3 and isinstance(problem, RowProblem) and problem.cells == ["Martin"]
    assert problem.cell_problem(["last_name", "first_name"]) == (
        "the cell in column B (first_name) holds 'FALSE', a true-or-false value (VRAI or FAUX "
        "in French), not text: a spreadsheet turns Vrai, Faux, True or False typed in a cell "
        "into one; give the column the Text format and type the value again"
    )


def test_the_values_are_those_openpyxl_read_only_gave(tmp_path: Path) -> None:
    values: list[object] = [
        "text",
        "  padded  ",
        "",
        185057800608491,
        1000,
        1.5,
        1.85058e14,
        1e20,
        -0.25,
        date(1985, 5, 12),
        datetime(2024, 2, 29, 13, 45, 30),
        time(8, 30),
        timedelta(hours=26, minutes=3),
        None,
        "après",
    ]  # not a formula: openpyxl writes it uncalculated, read as None there, refused here;
    # nor True or False, refused here (test above)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(values)
    sheet.append([])
    sheet.append(list(reversed(values)))
    sheet["Z5"] = "far"  # a gap of rows and of columns
    path = tmp_path / "all.xlsx"
    book.save(path)
    reference = load_workbook(path, read_only=True, data_only=True)
    read_only: Any = reference.worksheets[0]
    read_only.reset_dimensions()  # as the reader before did: rows as long as their last cell
    expected = [
        (number, [cell_text(value) for value in row])
        for number, row in enumerate(read_only.iter_rows(values_only=True), 1)
        if any(value is not None and cell_text(value).strip() for value in row)
    ]
    reference.close()
    assert list(filled_rows(path, 1)) == expected
    assert [number for number, _ in expected] == [1, 3, 5]


def test_a_row_longer_than_a_csv_line_may_be_is_a_problem_never_read_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "long.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(COLUMNS))
    sheet.append([*(DUPONT[name] for name in COLUMNS[:3]), "x" * 32_767, "y" * 32_767])
    sheet.append([DUPONT[name] for name in COLUMNS])
    book.save(path)
    assert list(read_member_rows(path)) == [
        SourceRow(2, None, "a row longer than 65,536 characters"),
        SourceRow(3, DUPONT),
    ]
    sheet.insert_rows(1)
    # A cell holds at most 32,767 characters, in Excel as in openpyxl.
    for column in "ABC":
        sheet[f"{column}1"] = "z" * 32_767
    book.save(path)
    with pytest.raises(InvalidInput, match=r"long\.xlsx: row 1, the header, is longer than 65,536"):
        read_member_rows(path)
    # The same with the texts in the shared strings, as Excel saves them.
    long = f"<si><t>{'x' * 32_767}</t></si>"
    cells = "".join(f'<c t="s"><v>{len(STRINGS) + at}</v></c>' for at in range(3))
    rows = HEADER + f'<row r="2">{cells}</row>' + DUPONT_ROW.replace("{serial}", "31179")
    path = excel_workbook(tmp_path / "shared.xlsx", rows, strings=(long, long, long))
    assert [(row.line, row.problem) for row in read_member_rows(path)] == [
        (2, "a row longer than 65,536 characters"),
        (3, None),
    ]


def test_a_row_that_cannot_be_read_is_a_rejected_row_as_a_bad_csv_line(tmp_path: Path) -> None:
    """A cell past the last column, a shared string that does not exist, a number that is
    not one, a formula never calculated, a reference without a column: the row is rejected
    with its number and why, the rows around it are read (a damaged sheet's XML is what
    refuses the file)."""
    damaged = {
        4: '<c r="XFE{n}" t="inlineStr"><is><t>x</t></is></c>',
        6: '<c r="L{n}" t="s"><v>999999</v></c>',
        8: '<c r="L{n}"><v>1,5</v></c>',
        10: '<c r="12" t="inlineStr"><is><t>x</t></is></c>',
        11: '<c r="12" t="inlineStr"><is><t>x</t></is></c>',  # the same, not remembered
        9: '<c r="L{n}"><f>A1&amp;B1</f></c>',  # never calculated: its value is not empty
        7: '<c r="L{n}"><f>A1&amp;B1</f><v/></c>',  # the same, as openpyxl writes it
    }
    uncalculated = (
        "the cell in column L (address_building) holds a formula without its result (the file "
        "was written by a program that does not compute formulas): open it in a spreadsheet "
        "and save it again, or paste the values"
    )
    unreadable = "cannot be read (it points to a text the workbook does not hold)"
    not_a_number = "cannot be read (it holds '1,5', which is not a value of its type)"
    rows = HEADER + "".join(
        DUPONT_ROW.replace("{serial}", "31179")
        .replace('r="3"', f'r="{n}"')
        .replace('3"', f'{n}"')
        .replace("</row>", damaged.get(n, "").format(n=n) + "</row>")
        for n in range(3, 12)
    )
    path = excel_workbook(tmp_path / "m.xlsx", rows)
    read_member_rows(path).check_records()  # the XML itself is sound
    problems = {row.line: row.problem for row in read_member_rows(path) if row.problem}
    assert problems == {
        4: "a cell in column 16,385, past a spreadsheet's last (16,384)",
        6: f"the cell in column L (address_building) {unreadable}",
        7: uncalculated,
        8: f"the cell in column L (address_building) {not_a_number}",
        9: uncalculated,
        10: "a cell reference without a column ('')",
        11: "a cell reference without a column ('')",
    }
    assert len(list(read_member_rows(path))) == 9
    # A row reference that is no row number (superscript two): that row's problem too.
    odd = HEADER + DUPONT_ROW.replace("{serial}", "31179").replace('r="3"', 'r="²"')
    path = excel_workbook(tmp_path / "odd.xlsx", odd + DUPONT_ROW.replace("{serial}", "31179"))
    read_member_rows(path).check_records()
    assert [(row.line, row.problem) for row in read_member_rows(path)] == [
        (2, "a row reference '²'"),
        (3, None),
    ]


def test_a_part_that_declares_entities_is_refused(tmp_path: Path) -> None:
    path = excel_workbook(tmp_path / "m.xlsx", HEADER)
    laughs = tmp_path / "laughs.xlsx"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(laughs, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/sharedStrings.xml":
                data = data.replace(
                    b"<sst ",
                    b'<!DOCTYPE sst [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><sst ',
                )
            target.writestr(item, data)
    with pytest.raises(InvalidInput) as refused:
        read_member_rows(laughs)
    assert str(refused.value).endswith(
        "laughs.xlsx: not a workbook that can be read (a part declares a DTD, which no "
        "spreadsheet writes); save it again as .xlsx (Excel Workbook) or as CSV UTF-8"
    )


def test_a_workbook_with_only_a_chart_sheet_has_no_worksheet(tmp_path: Path) -> None:
    path = excel_workbook(tmp_path / "m.xlsx", HEADER)
    charts = tmp_path / "charts.xlsx"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(charts, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/workbook.xml":
                data = data.replace(b'r:id="rId1"', b'r:id="rId3"').replace(b"rId2", b"rId3")
            target.writestr(item, data)
    with pytest.raises(InvalidInput) as refused:
        read_member_rows(charts)
    assert "charts.xlsx: not a workbook that can be read (the workbook has no worksheet)" in str(
        refused.value
    )
