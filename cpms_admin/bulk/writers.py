"""Writing member files (export) and the `--errors` report of an import."""

import csv
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import IO, Any, BinaryIO, Protocol, TextIO, cast

from cpms_admin.bulk.cells import MARKED, guard, protect
from cpms_admin.bulk.rows import EXPORT_COLUMNS, PIN_HASH, REPORT_COLUMNS, RowError
from cpms_admin.bulk.sniff import check_format
from cpms_admin.clock import iso
from cpms_admin.errors import InvalidInput

# The columns a spreadsheet would take for numbers or dates: text cells in a workbook,
# protected from conversion in a CSV for Excel.
TEXT_COLUMNS = ("nir", "postcode", "birth_date", "closed_at")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class _CsvRows:
    """csv.writer; with `\\n` line ends a bare `\\r` is not quoted by QUOTE_MINIMAL, so rows
    holding one are fully quoted to read back the same."""

    def __init__(self, out: TextIO, *, delimiter: str = ",", line_end: str = "\n") -> None:
        self._out = out
        self._minimal = csv.writer(out, delimiter=delimiter, lineterminator=line_end)
        self._all = csv.writer(
            out, delimiter=delimiter, lineterminator=line_end, quoting=csv.QUOTE_ALL
        )
        self._bare_cr = "\r" not in line_end

    def write(self, fields: list[str]) -> None:
        quote_all = self._bare_cr and "\r" in "".join(fields)
        (self._all if quote_all else self._minimal).writerow(fields)

    def close(self) -> None:
        self._out.flush()

    def abort(self) -> None:
        """Nothing to undo: what was written stays (the caller discards it or not)."""


def _guarded(values: list[str | None]) -> list[str]:
    """The formula guard (cells.guard) on every value, at the cost of one test for most
    (`starts_marked`, inlined: a million-member export runs it 17 million times)."""
    return [(guard(value) if value[:1] in MARKED else value) if value else "" for value in values]


class MemberWriter(ABC):
    """Writes member rows in the export format; only EXPORT_COLUMNS are written, so a
    `pin_hash` or any other key in a row is dropped: export never writes secrets.

    `count` is the number of rows written. `close()` flushes but does not close the output
    (it may be stdout).
    """

    def __init__(self) -> None:
        self.count = 0

    def write(self, row: Mapping[str, object]) -> None:
        self._write([_text(row.get(name)) for name in EXPORT_COLUMNS])
        self.count += 1

    def write_values(self, values: Sequence[object]) -> None:
        """`write` for the values of EXPORT_COLUMNS in that order (a database row)."""
        self._write([value if value.__class__ is str else _text(value) for value in values])
        self.count += 1

    @abstractmethod
    def _write(self, values: list[str | None]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def abort(self) -> None:
        """Stop after a failure: what was written stays (text), or nothing is (a workbook)."""
        self.close()

    def __enter__(self) -> "MemberWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()


class CsvMemberWriter(MemberWriter):
    """UTF-8 text with a header row (so an empty export still imports), `,` and `\\n`, every
    value under the formula guard. Open `out` with `newline=""`.

    `excel`: the CSV French Excel opens as is: a BOM (else it reads Windows-1252), `;` (its
    list separator), CRLF, and the TEXT_COLUMNS as `="..."` so that it converts none of them
    (cells.protect). It imports back unchanged.
    """

    def __init__(self, out: TextIO, *, excel: bool = False) -> None:
        super().__init__()
        self._out = out
        if excel:
            out.write("\ufeff")
        self._rows = _CsvRows(
            out, delimiter=";" if excel else ",", line_end="\r\n" if excel else "\n"
        )
        self._protected = [EXPORT_COLUMNS.index(name) for name in TEXT_COLUMNS] if excel else []
        self._rows.write(list(EXPORT_COLUMNS))

    def _write(self, values: list[str | None]) -> None:
        fields = _guarded(values)
        for at in self._protected:
            value = values[at]
            if value:
                fields[at] = protect(value)
        self._rows.write(fields)

    def close(self) -> None:
        self._out.flush()


class JsonlMemberWriter(MemberWriter):
    """One compact object per line, keys in EXPORT_COLUMNS order, null for no value. Values
    are written as they are: JSON Lines is for programs, not spreadsheets."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out

    def _write(self, values: list[str | None]) -> None:
        obj = dict(zip(EXPORT_COLUMNS, values, strict=True))
        self._out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._out.flush()


def open_member_writer(
    out: IO[Any], *, fmt: str, excel: bool = False, rows: int | None = None
) -> MemberWriter:
    """A writer for `fmt` onto `out`: text for "csv" (`excel`: for French Excel) and
    "jsonl", binary for "xlsx" (`rows`: how many will be written, if known). CSV and XLSX
    write their header at once."""
    fmt = check_format(fmt)
    if excel and fmt != "csv":
        raise InvalidInput(
            "--excel makes a CSV for Excel; for a workbook, give --format xlsx without --excel"
        )
    if fmt == "xlsx":
        from cpms_admin.bulk.xlsx.write import XlsxMemberWriter

        return XlsxMemberWriter(cast(BinaryIO, out), rows=rows)
    text = cast(TextIO, out)
    return CsvMemberWriter(text, excel=excel) if fmt == "csv" else JsonlMemberWriter(text)


_LINES_NAMED = 10


class _ReportRows(Protocol):
    """Where an ErrorReport's rows go: _CsvRows, or xlsx.write.XlsxReportRows."""

    def write(self, fields: list[str]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ErrorReport:
    """The `--errors` report of an import, written as rejected rows come (an import may
    reject many, they are not kept in memory): CSV `line, field, reason`, then the original
    values, so a person can fix them and import the report itself. `workbook`: the same rows
    as an XLSX workbook onto the binary `out` (xlsx.write.XlsxReportRows), for French Excel,
    which opens a `,` CSV as one column and rounds its NIRs.

    The report has the export columns (or those of them `columns` names: the source's, see
    MemberFile.report_columns): a `pin_hash` from the source is left out, because the
    report is meant to be opened and passed around by people; `hashes_left_out` counts the
    rows that had one (their members, imported from the report, would have no PIN), with the
    lines of the first few. For the same reason every value is under the formula guard, as
    in an export (reading the report takes it off).
    """

    def __init__(
        self, out: IO[Any], *, columns: Sequence[str] = EXPORT_COLUMNS, workbook: bool = False
    ) -> None:
        self._columns = [name for name in EXPORT_COLUMNS if name in columns]
        heading = [*REPORT_COLUMNS, *self._columns]
        self._rows: _ReportRows
        if workbook:
            from cpms_admin.bulk.xlsx.write import XlsxReportRows

            self._rows = XlsxReportRows(cast(BinaryIO, out), heading=heading)
        else:
            self._rows = _CsvRows(cast(TextIO, out))
            self._rows.write(heading)
        self.count = self.hashes_left_out = 0
        self.lines_left_without_hash: list[int] = []

    def write(self, error: RowError) -> None:
        values = error.values or {}
        if values.get(PIN_HASH):
            self.hashes_left_out += 1
            if len(self.lines_left_without_hash) < _LINES_NAMED:
                self.lines_left_without_hash.append(error.line)
        # Every cell guarded: a field is the file's own heading, a reason may quote a value.
        self._rows.write(
            [
                str(error.line),
                *_guarded([error.field, error.reason, *(values.get(n) for n in self._columns)]),
            ]
        )
        self.count += 1

    def close(self) -> None:
        """The report complete: flushed, or a workbook zipped onto `out`."""
        self._rows.close()

    def abort(self) -> None:
        """Stop after a failure: a workbook's rows are given up, nothing more goes to `out`."""
        self._rows.abort()


def write_error_report(out: TextIO, *, errors: Iterable[RowError]) -> int:
    """Write a whole report (see ErrorReport); returns the number of rows."""
    report = ErrorReport(out)
    for error in errors:
        report.write(error)
    report.close()
    return report.count
