"""Writing member files (export) and the `--errors` report of an import."""

import csv
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import date
from types import TracebackType
from typing import TextIO

from cpms_admin.bulk.rows import REPORT_COLUMNS, RowError
from cpms_admin.bulk.sniff import FORMATS
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS
from cpms_admin.members.postal import FORMULA_STARTS


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class _CsvRows:
    """csv.writer with `\\n` line ends; a bare `\\r` is not quoted by QUOTE_MINIMAL then,
    so rows holding one are fully quoted to read back the same."""

    def __init__(self, out: TextIO) -> None:
        self._minimal = csv.writer(out, lineterminator="\n")
        self._all = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def write(self, fields: list[str]) -> None:
        writer = self._all if any("\r" in field for field in fields) else self._minimal
        writer.writerow(fields)


class MemberWriter(ABC):
    """Writes member rows in the export format; only COLUMNS are written, so a `pin_hash`
    or any other key in a row is dropped: export never writes secrets.

    `count` is the number of rows written. `close()` flushes but does not close `out` (it
    may be stdout). For CSV, open `out` with `newline=""` so line ends are not translated.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.count = 0

    def write(self, row: Mapping[str, object]) -> None:
        self._write([_text(row.get(name)) for name in COLUMNS])
        self.count += 1

    @abstractmethod
    def _write(self, values: list[str | None]) -> None: ...

    def close(self) -> None:
        self._out.flush()

    def __enter__(self) -> "MemberWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CsvMemberWriter(MemberWriter):
    """UTF-8 text, `,` separator, a header row (so an empty export still imports)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._rows = _CsvRows(out)
        self._rows.write(list(COLUMNS))

    def _write(self, values: list[str | None]) -> None:
        self._rows.write([value or "" for value in values])


class JsonlMemberWriter(MemberWriter):
    """One compact object per line, keys in COLUMNS order, null for no value."""

    def _write(self, values: list[str | None]) -> None:
        obj = dict(zip(COLUMNS, values, strict=True))
        self._out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


def open_member_writer(out: TextIO, *, fmt: str) -> MemberWriter:
    """A writer for `fmt` ("csv" or "jsonl") onto `out`; CSV writes its header at once."""
    if fmt.lower() not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: use csv or jsonl")
    return CsvMemberWriter(out) if fmt.lower() == "csv" else JsonlMemberWriter(out)


def _inert(value: str) -> str:
    return f"'{value}" if value.lstrip().startswith(FORMULA_STARTS) else value


class ErrorReport:
    """The `--errors` report of an import, written as rejected rows come (an import may
    reject many, they are not kept in memory): CSV `line, field, reason`, then the original
    values, so a person can fix them and import the report itself.

    The report has the export columns: a `pin_hash` from the source is left out, because
    the report is meant to be opened and passed around by people. For the same reason a
    rejected value that a spreadsheet would run as a formula gets a leading `'`.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._rows = _CsvRows(out)
        self._rows.write([*REPORT_COLUMNS, *COLUMNS])
        self.count = 0

    def write(self, error: RowError) -> None:
        values = error.values or {}
        self._rows.write(
            [
                str(error.line),
                error.field or "",
                error.reason,
                *(_inert(values.get(name) or "") for name in COLUMNS),
            ]
        )
        self.count += 1

    def close(self) -> None:
        self._out.flush()


def write_error_report(out: TextIO, *, errors: Iterable[RowError]) -> int:
    """Write a whole report (see ErrorReport); returns the number of rows."""
    report = ErrorReport(out)
    for error in errors:
        report.write(error)
    report.close()
    return report.count
