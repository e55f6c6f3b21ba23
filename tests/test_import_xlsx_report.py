"""`members import --errors REPORT.xlsx`: the rejected rows as a workbook French Excel opens in
columns, every NIR whole; the same rows as the CSV report, which any other name still gets
byte for byte; private, and never left half-written or from an earlier run."""

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from cpms_admin.bulk.formats import ErrorReport, RowError, read_member_rows
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS
from tests.factories import make_nir
from tests.file_helpers import lax_umask, mode  # noqa: F401 (autouse fixture)
from tests.harness import Cli
from tests.import_helpers import import_again_after_a_kill, person, write_csv, write_xlsx

HEADING = ["line", "field", "reason", *COLUMNS]
LINK = '=HYPERLINK("http://x.example/","clic")'
ROWS = [
    person(1),  # line 2: imported
    person(2, postcode="7500"),  # line 3: rejected, its NIR to be kept whole
    person(3, last_name=LINK),  # line 4: a formula
    person(4, nir="185058000000000"),  # line 5: a NIR a spreadsheet rounded
    person(5, first_name="Je\x01an"),  # line 6: a character no workbook holds
]


def rejected_lines(stderr: str) -> dict[str, str]:
    """The reason of each rejected line, as the import warns of it."""
    return dict(re.findall(r"^Warning: line (\d+): (.*)$", stderr, flags=re.MULTILINE))


def expected_csv(reasons: dict[str, str]) -> bytes:
    """The CSV report as it has always been: UTF-8 with a BOM, `,`, LF, values guarded."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADING)
    for line, field, row in [("3", "postcode", ROWS[1]), ("4", "last_name", ROWS[2]),
                             ("5", "nir", ROWS[3]), ("6", "first_name", ROWS[4])]:  # fmt: skip
        values = {**row, "last_name": "'" + LINK if row["last_name"] == LINK else row["last_name"]}
        writer.writerow([line, field, reasons[line], *(values[name] or "" for name in COLUMNS)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def sheet_of(path: Path) -> Any:
    """The first sheet of the workbook at `path`, as Excel would open it."""
    return load_workbook(path).worksheets[0]


def test_a_report_named_xlsx_is_a_workbook_of_the_csv_reports_rows_as_text(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "adherents.csv", ROWS)
    as_csv, as_xlsx = tmp_path / "rejets.csv", tmp_path / "rejets.XLSX"
    runs = [cli("members", "import", str(source), "--errors", str(as_csv))]
    runs.append(cli("members", "import", str(source), "--errors", str(as_xlsx)))
    assert [run.exit_code for run in runs] == [1, 1], runs[0].output + runs[1].output
    reasons = rejected_lines(runs[0].stderr)
    assert as_csv.read_bytes() == expected_csv(reasons)  # CSV byte for byte, as before

    assert as_xlsx.read_bytes().startswith(b"PK\x03\x04") and mode(as_xlsx) == 0o600
    sheet = sheet_of(as_xlsx)
    cells = [list(row) for row in sheet.iter_rows()]
    with as_csv.open(encoding="utf-8-sig", newline="") as handle:
        csv_rows = list(csv.reader(handle))
    holdable = [[value.replace("\x01", "\ufffd") for value in row] for row in csv_rows]
    assert [[cell.value or "" for cell in row] for row in cells] == holdable
    assert [cell.value for cell in cells[0]] == HEADING
    assert {cell.data_type for row in cells for cell in row if cell.value is not None} == {"s"}
    at = {name: HEADING.index(name) for name in ("reason", "nir", "last_name", "first_name")}
    postcode, formula, rounded, control = cells[1:]
    assert (postcode[at["nir"]].value, postcode[at["nir"]].number_format) == (make_nir(2), "@")
    assert (rounded[at["nir"]].value, rounded[at["nir"]].number_format) == ("185058000000000", "@")
    assert postcode[at["reason"]].value == reasons["3"]
    assert reasons["3"].startswith("postcode '7500' must be 5 digits")
    assert formula[at["last_name"]].value == "'" + LINK  # as export writes it: inert text
    assert control[at["first_name"]].value == "Je\ufffdan"


def test_a_workbook_report_of_a_dry_run_imports_back_as_the_rows_were(
    cli: Cli, tmp_path: Path
) -> None:
    """A dry run writes its report too; read back, each rejected row is its original values
    (the formula guard taken off, the NIRs whole), ready to fix and import."""
    source = write_csv(tmp_path / "adherents.csv", ROWS[:4])
    report = tmp_path / "rejets.xlsx"
    result = cli("members", "import", str(source), "--dry-run", "--errors", str(report))
    assert result.exit_code == 1, result.output
    assert sheet_of(report).title == "rejected"
    read_back = read_member_rows(report)
    assert read_back.fmt == "xlsx" and read_back.columns == tuple(COLUMNS)
    assert [row.values for row in read_back] == ROWS[1:4]


def stop_after_one_rejected_row(*_: object, on_error: Any, **__: object) -> None:
    on_error(RowError(3, "postcode", "a reason", person(2, postcode="7500")))
    raise InvalidInput("the disk went away")


@pytest.mark.parametrize("run", ["refused", "stopped half-way"])
def test_a_run_that_writes_no_workbook_report_removes_the_earlier_one(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: str
) -> None:
    """As with a CSV report, a script must not read an earlier run's rejected rows as this
    run's; a workbook that is not a report (arguments swapped) is left alone."""
    source = write_csv(tmp_path / "adherents.csv", ROWS[:2])
    reports = tmp_path / "reports"
    reports.mkdir()
    report = reports / "rejets.xlsx"
    assert cli("members", "import", str(source), "--errors", str(report)).exit_code == 1
    assert sheet_of(report)["C2"].value.startswith("postcode '7500'")
    if run == "refused":
        source.write_text("nir;last_name\n185057800608491;Martin\n")
    else:
        monkeypatch.setattr("cpms_admin.bulk.importer.import_members", stop_after_one_rejected_row)
    result = cli("members", "import", str(source), "--errors", str(report))
    assert result.exit_code == 2, result.output
    assert f"Note: {report} removed: it held an earlier run's rejected rows" in result.stderr
    assert list(reports.iterdir()) == []  # nor a temporary file left

    members = write_xlsx(tmp_path / "adherents.xlsx", ROWS[:1])
    swapped = cli("members", "import", "--errors", str(members), str(tmp_path / "rejets.csv"))
    assert swapped.exit_code == 2 and members.exists() and "removed" not in swapped.stderr


@pytest.mark.slow
def test_a_killed_import_leaves_no_workbook_report_and_the_next_finishes_it(
    cli: Cli, tmp_path: Path
) -> None:
    """kill -9 mid-import: the report is a hidden temporary file, never a workbook under its
    name; the next run removes it and writes the whole report."""
    source = write_csv(tmp_path / "m.csv", [person(n) for n in range(1, 31)] + [ROWS[1]])
    reports = tmp_path / "reports"
    reports.mkdir()
    report = reports / "rejets.xlsx"
    assert import_again_after_a_kill(cli, source, report) == 1  # the rejected row
    assert [path.name for path in reports.iterdir()] == ["rejets.xlsx"]
    assert sheet_of(report)["D2"].value == make_nir(2) and mode(report) == 0o600


@pytest.mark.parametrize("workbook", [False, True], ids=["csv", "xlsx"])
def test_every_cell_of_a_report_is_guarded_against_formulas(workbook: bool) -> None:
    """The field is the file's own heading and a reason may quote a value: in a report a
    spreadsheet opens, none may run as a formula."""
    out: Any = io.BytesIO() if workbook else io.StringIO()
    report = ErrorReport(out, columns=("nir",), workbook=workbook)
    report.write(RowError(2, "=HYPERLINK(1)", "+1 is wrong", {"nir": "@SUM(1)"}))
    report.close()
    if workbook:
        sheet = load_workbook(io.BytesIO(out.getvalue())).active
        cells = [cell.value for cell in list(sheet.iter_rows())[1]]
    else:
        cells = list(csv.reader(io.StringIO(out.getvalue().lstrip("\ufeff"))))[1]
    assert cells[:4] == ["2", "'=HYPERLINK(1)", "'+1 is wrong", "'@SUM(1)"]
