"""Reading an XLSX workbook: the header row and the members of its first sheet.

openpyxl's read-only mode parses the sheet as it is read, so memory stays flat whatever the
number of rows (a workbook saved by a spreadsheet also has a table of shared strings, which
is held while reading). python-calamine reads ten times faster but loads the whole sheet
first; bench/xlsx.py measures both (README, Performance). openpyxl is imported here only, by
the commands that read a workbook.

Cells come as the text a CSV would hold (cells.cell_text): a NIR or a postcode stored as a
number is read as its digits, and the field's validation then puts back a postcode's lost
zero or names the damage. A row is numbered as the spreadsheet shows it.
"""

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cpms_admin.bulk.cells import cell_text, starts_marked, unguard
from cpms_admin.bulk.forked import forked
from cpms_admin.bulk.limits import check_unzipped
from cpms_admin.bulk.rows import IMPORT_COLUMNS, SourceRow
from cpms_admin.bulk.sniff import cannot_read
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS


def _unreadable(path: Path, exc: Exception) -> InvalidInput:
    return InvalidInput(
        f"{path}: not a workbook that can be read ({type(exc).__name__}: {exc}); save it "
        "again as .xlsx (Excel Workbook) or as CSV UTF-8"
    )


@contextmanager
def _first_sheet(path: Path) -> Iterator[Any]:
    """The first worksheet, in read-only mode (typed Any: openpyxl's stubs give a read-only
    sheet the methods of a full one)."""
    from openpyxl import load_workbook

    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below); a name: openpyxl checks it
    except OSError as exc:
        raise cannot_read(path, exc) from None
    try:
        with zipfile.ZipFile(handle) as archive:
            for part in archive.infolist():
                check_unzipped(path, part.filename, part.file_size, part.compress_size)
        book = load_workbook(handle, read_only=True, data_only=True, keep_links=False)
    except InvalidInput:
        handle.close()
        raise
    except Exception as exc:  # a damaged or foreign file fails in many ways, all the same here
        handle.close()
        raise _unreadable(path, exc) from None
    try:
        sheets = book.worksheets
        if not sheets:
            raise InvalidInput(f"{path}: the workbook has no worksheet")
        sheet: Any = sheets[0]
        # The size a file states is not trusted: openpyxl would stop reading at its end.
        sheet.reset_dimensions()
        yield sheet
    finally:
        book.close()
        handle.close()


def _texts(cells: tuple[object, ...]) -> list[str | None]:
    return [cell if cell is None or type(cell) is str else cell_text(cell) for cell in cells]


def _rows(path: Path, sheet: Any, first: int) -> Iterator[list[str | None]]:
    try:
        for cells in sheet.iter_rows(min_row=first, values_only=True):
            yield _texts(cells)
    except InvalidInput:
        raise
    except Exception as exc:  # the sheet's XML broken half-way
        raise _unreadable(path, exc) from None


def xlsx_header(path: Path) -> tuple[list[str], int]:
    """The first row that has a value, as column names, and its row number."""
    with _first_sheet(path) as sheet:
        for number, texts in enumerate(_rows(path, sheet, 1), start=1):
            names = [text or "" for text in texts]
            if any(name.strip() for name in names):
                return names, number
    raise InvalidInput(f"{path}: the first sheet is empty; a header row is expected")


def _filled_rows(path: Path, first: int) -> Iterator[tuple[int, list[str | None]]]:
    """The rows from row `first` on that have a value, with their numbers."""
    with _first_sheet(path) as sheet:
        for number, texts in enumerate(_rows(path, sheet, first), start=first):
            if any(text and not text.isspace() for text in texts):
                yield number, texts


def xlsx_rows(path: Path, *, header: tuple[str, ...], header_row: int) -> Iterator[SourceRow]:
    """The rows below the header, blank ones skipped; a value under no column name is that
    row's problem, as in a CSV file. The workbook is parsed in a helper process (forked)."""
    positions = [position for position, name in enumerate(header) if name in IMPORT_COLUMNS]
    names = [header[position] for position in positions]
    width = len(header)
    unnamed = "" in header
    for number, texts in forked(lambda: _filled_rows(path, header_row + 1)):
        if unnamed or len(texts) > width:
            stray = [
                at
                for at, text in enumerate(texts)
                if text and not text.isspace() and (at >= width or not header[at])
            ]
            if stray:
                yield SourceRow(
                    number, None, f"a value in column {stray[0] + 1}, which has no name"
                )
                continue
        values: dict[str, str | None] = dict.fromkeys(COLUMNS)
        for name, at in zip(names, positions, strict=True):
            text = texts[at] if at < len(texts) else None
            if text:
                text = text.strip()
                values[name] = (unguard(text) if starts_marked(text) else text) or None
        yield SourceRow(number, values)
