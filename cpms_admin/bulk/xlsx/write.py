"""Workbooks: `members export --format xlsx`, and the `--errors` report of an import given a
`.xlsx` name. Each is one sheet whose first row names its columns.

openpyxl's write-only mode streams the rows to a temporary file (0600, removed once zipped),
so memory stays flat; closing zips the workbook onto `out`. Every value is a text cell, the
NIR, postcode and date columns formatted as Text too, so Excel converts nothing, not even a
cell someone edits. The same rows make the same bytes: fixed document properties and
ZIP entry times. openpyxl is imported here only, by the commands that write a workbook.
"""

import os
import re
import shutil
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from cpms_admin.bulk.cells import guard
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.bulk.writers import TEXT_COLUMNS, MemberWriter
from cpms_admin.errors import Refused

if TYPE_CHECKING:
    from _typeshed import SizedBuffer
    from openpyxl.cell import Cell

SHEET = "members"
REPORT_SHEET = "rejected"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the first moment a ZIP entry can have
_FIXED = datetime(1980, 1, 1)
_WIDTHS = {
    "nir": 17,
    "email": 28,
    "street": 28,
    "closed_at": 26,
    "closed_reason": 28,
    "line": 8,
    "reason": 60,
}
_ZIP64_FROM = 1 << 31
# What a workbook's XML cannot hold: control characters but tab and line ends, halves of a
# character, U+FFFE and U+FFFF (openpyxl refuses the row).
_NOT_IN_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class _SameBytesZip(ZipFile):
    """Every entry dated the ZIP epoch and owner-only, so an archive depends on its content
    alone. openpyxl adds parts with `writestr` and the rows' temporary file with `write`."""

    def writestr(
        self,
        zinfo_or_arcname: str | ZipInfo,
        data: "SizedBuffer | str",
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        if not isinstance(zinfo_or_arcname, ZipInfo):
            zinfo_or_arcname = _entry(zinfo_or_arcname)
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(
        self,
        filename: "str | os.PathLike[str]",
        arcname: "str | os.PathLike[str] | None" = None,
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        entry = _entry(os.fspath(arcname if arcname is not None else filename))
        big = os.path.getsize(filename) >= _ZIP64_FROM
        with open(filename, "rb") as source, self.open(entry, "w", force_zip64=big) as target:
            shutil.copyfileobj(source, target, 1 << 20)


def _entry(name: str) -> ZipInfo:
    entry = ZipInfo(name, date_time=_ZIP_EPOCH)
    entry.compress_type = ZIP_DEFLATED
    entry.external_attr = 0o600 << 16
    return entry


class XlsxSheet:
    """A write-only workbook of one sheet, `title`, whose first row is `columns`. `append`
    adds a row of texts; `close()` zips the workbook onto `out` (binary, and left open: it
    may be stdout); `abort()` gives it up, writing nothing there.

    `rows`, the number of rows to come, goes into the sheet's `<dimension>` as Excel writes
    it: without it openpyxl parses a whole sheet once more before reading it.
    """

    def __init__(
        self, out: BinaryIO, *, title: str, columns: Sequence[str], rows: int | None = None
    ) -> None:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.utils import get_column_letter

        self._out = out
        self._cell = WriteOnlyCell
        self._book = Workbook(write_only=True)
        properties = self._book.properties
        properties.creator = "cpms-admin"
        properties.created = properties.modified = _FIXED
        self._sheet = self._book.create_sheet(title)
        if rows is not None:
            # openpyxl writes the dimension a sheet can tell (WorksheetWriter.write_dimensions);
            # a write-only sheet cannot, so it is told, before its first row.
            last = f"{get_column_letter(len(columns))}{rows + 1}"
            setattr(self._sheet, "calculate_dimension", lambda: f"A1:{last}")  # noqa: B010
        for position, name in enumerate(columns, start=1):
            dimension = self._sheet.column_dimensions[get_column_letter(position)]
            dimension.width = _WIDTHS.get(name, 14)
            if name in TEXT_COLUMNS:
                dimension.number_format = "@"  # for cells typed there later
        self._text_at = frozenset(at for at, name in enumerate(columns) if name in TEXT_COLUMNS)
        self._sheet.append(list(columns))

    def append(self, row: "list[str | Cell | None]") -> None:
        """One row of texts, None for an empty cell (`row` is changed in place)."""
        for at in self._text_at:
            value = row[at]
            if isinstance(value, str):
                cell = self._cell(self._sheet, value=value)
                cell.number_format = "@"
                row[at] = cell
        self._sheet.append(row)

    def close(self) -> None:
        from openpyxl.writer.excel import ExcelWriter

        archive = _SameBytesZip(self._out, "w", ZIP_DEFLATED, allowZip64=True)
        try:
            ExcelWriter(self._book, archive).save()  # not Workbook.save: it dates the file
        except BaseException:
            # `out` failed (a full disk): the archive is not finished when collected, and the
            # sheet's writers are ended, else each prints a traceback as the program exits.
            archive.fp = None
            with suppress(Exception):
                self.abort()
            raise
        self._out.flush()

    def abort(self) -> None:
        """Nothing goes to `out`. The rows' temporary file is ended properly (openpyxl removes
        it when the program exits): left open, its writer complains when collected."""
        if not self._sheet.closed:
            self._sheet.close()


class XlsxMemberWriter(MemberWriter):
    """Members into a workbook (XlsxSheet) of the export's columns, every value under the
    formula guard as in a CSV export.

    `rows`, the number of members to come, states the sheet's size: then exactly that many
    must be written.
    """

    def __init__(self, out: BinaryIO, *, rows: int | None = None) -> None:
        super().__init__()
        self._sheet = XlsxSheet(out, title=SHEET, columns=EXPORT_COLUMNS, rows=rows)
        self._rows = rows

    def _write(self, values: list[str | None]) -> None:
        self._sheet.append([guard(value) if value else None for value in values])

    def close(self) -> None:
        if self._rows is not None and self.count != self._rows:
            self.abort()
            raise Refused(
                f"{self.count:,} members written where {self._rows:,} were counted: the "
                "members changed during the export; run it again"
            )
        self._sheet.close()

    def abort(self) -> None:
        self._sheet.abort()


class XlsxReportRows:
    """The rows of an import's `--errors` report (writers.ErrorReport), `heading` first, as
    its CSV has them (the values already under the formula guard), in a workbook: each a text
    cell, an empty value no cell. A character no workbook can hold (a control character in a
    rejected row) is written U+FFFD, which import refuses in every field: the agent sees
    where it was, and the row cannot be imported back as it stands."""

    def __init__(self, out: BinaryIO, *, heading: Sequence[str]) -> None:
        self._sheet = XlsxSheet(out, title=REPORT_SHEET, columns=heading)

    def write(self, fields: list[str]) -> None:
        self._sheet.append(
            [_NOT_IN_XML.sub("\ufffd", field) if field else None for field in fields]
        )

    def close(self) -> None:
        self._sheet.close()

    def abort(self) -> None:
        self._sheet.abort()
