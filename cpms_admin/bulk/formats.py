"""Reading and writing bulk member files: the public API of `cpms_admin.bulk`.

member_file = read_member_rows(Path("adherents.csv"))   # checks encoding and header
for row in member_file:                                 # streams, one SourceRow each
    ...
with open_member_writer(sys.stdout, fmt="jsonl") as writer:
    writer.write(member.as_row())

CSV, JSON Lines and XLSX (the first sheet of a workbook) are read; the same three are
written, CSV also for French Excel (`excel=True`). Limits: see sniff.py.
"""

from collections.abc import Iterator
from pathlib import Path

from cpms_admin.bulk.readers import (
    check_header,
    csv_records,
    csv_rows,
    jsonl_columns,
    jsonl_rows,
    reads_cleanly,
)
from cpms_admin.bulk.rows import EXPORT_COLUMNS, IMPORT_COLUMNS, RowError, SourceRow
from cpms_admin.bulk.sniff import (
    ZIP_MAGIC,
    cannot_read,
    check_binary,
    check_format,
    check_size,
    first_line,
    magic,
    open_text,
    resolve_delimiter,
    resolve_encoding,
    resolve_format,
)
from cpms_admin.bulk.writers import (
    ErrorReport,
    MemberWriter,
    open_member_writer,
    write_error_report,
)
from cpms_admin.errors import InvalidInput
from cpms_admin.private_files import refuse_reserved_source

__all__ = [
    "ErrorReport",
    "MemberFile",
    "MemberWriter",
    "RowError",
    "SourceRow",
    "open_member_writer",
    "read_member_rows",
    "write_error_report",
]


class MemberFile:
    """A checked member file. Each iteration reads it again from the start, one row at a
    time, so an importer can make a dry pass first; the file is never held in memory.

    Iterating may still raise InvalidInput if a quote left open swallows later lines.
    """

    def __init__(
        self,
        *,
        path: Path,
        fmt: str,
        encoding: str | None,
        delimiter: str | None,
        header: tuple[str, ...],
        header_row: int = 1,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.encoding = encoding  # None for a workbook
        self.delimiter = delimiter  # None but for CSV
        self._header = header  # as in the file, including ignored columns
        self._header_row = header_row  # a workbook's header may follow blank rows
        # The member columns of the header (for JSONL, the keys of its first object: each
        # line says which it gives).
        self.columns = tuple(name for name in header if name in IMPORT_COLUMNS)

    @property
    def report_columns(self) -> tuple[str, ...]:
        """The columns of the file's `--errors` report: those of its header, so that the report,
        fixed and imported back with `--on-conflict update`, leaves what the file lacks as it
        is, as the file does; all of them for JSON Lines, whose lines each say which they give
        (an empty cell there clears its field: fix such lines in the original file)."""
        return EXPORT_COLUMNS if self.fmt == "jsonl" else self.columns

    def __iter__(self) -> Iterator[SourceRow]:
        if self.fmt == "xlsx":
            from cpms_admin.bulk.xlsx.read import xlsx_rows

            return xlsx_rows(self.path, header=self._header, header_row=self._header_row)
        assert self.encoding is not None
        if self.delimiter is None:  # JSONL
            return jsonl_rows(self.path, encoding=self.encoding)
        return csv_rows(
            self.path, encoding=self.encoding, delimiter=self.delimiter, header=self._header
        )

    def check_records(self) -> None:
        """Read the whole file once, without building rows: raise InvalidInput now rather
        than half-way through an import if a quote left open swallows lines, a line is too
        long, or a workbook's sheet turns out damaged or too wide further down. (A JSON
        Lines file has no such failure: each line stands alone.)"""
        if self.fmt == "xlsx":
            from cpms_admin.bulk.xlsx.read import check_sheet

            check_sheet(self.path)
            return
        if self.delimiter is None or self.encoding is None:
            return
        with open_text(self.path, self.encoding) as handle:
            if reads_cleanly(handle, delimiter=self.delimiter):
                return
        with open_text(self.path, self.encoding) as handle:
            for _ in csv_records(handle, path=self.path, delimiter=self.delimiter):
                pass

    def __repr__(self) -> str:
        return (
            f"MemberFile({str(self.path)!r}, fmt={self.fmt!r}, encoding={self.encoding!r}, "
            f"delimiter={self.delimiter!r})"
        )


def read_member_rows(
    path: Path, *, fmt: str | None = None, encoding: str | None = None, delimiter: str | None = None
) -> MemberFile:
    """Open an import file, guessing what is not given; raise InvalidInput (one line) when
    the file as a whole cannot be used: missing, too big, undecodable, bad header, or a file
    the command runs on (`refuse_reserved_source`)."""
    refuse_reserved_source(path, "a members file")
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if not path.is_file():
        raise InvalidInput(f"{path}: not a file")
    try:
        check_size(path, path.stat().st_size)
    except OSError as exc:
        raise cannot_read(path, exc) from None
    fmt = check_format(fmt) if fmt is not None else None
    head_bytes = magic(path)
    check_binary(path, head_bytes, fmt)
    if fmt == "xlsx" or (fmt is None and (head_bytes == ZIP_MAGIC or _named_xlsx(path))):
        return _workbook(path, encoding=encoding, delimiter=delimiter)
    encoding = resolve_encoding(path, encoding)
    head = first_line(path, encoding)
    fmt = resolve_format(path, fmt=fmt, head=head)
    if fmt == "jsonl":
        return MemberFile(
            path=path,
            fmt=fmt,
            encoding=encoding,
            delimiter=None,
            header=jsonl_columns(head, path=path),
        )
    delimiter = resolve_delimiter(delimiter, header=head)
    with open_text(path, encoding) as handle:
        first = next(csv_records(handle, path=path, delimiter=delimiter), None)
    if first is None:
        raise InvalidInput(f"{path}: the file is empty; a header row is expected")
    line, fields, problem = first
    if fields is None:
        raise InvalidInput(f"{path}: line {line}: unreadable header ({problem})")
    return MemberFile(
        path=path,
        fmt=fmt,
        encoding=encoding,
        delimiter=delimiter,
        header=check_header(fields, path=path),
    )


def _named_xlsx(path: Path) -> bool:
    return resolve_format(path, fmt=None, head="") == "xlsx"


def _workbook(path: Path, *, encoding: str | None, delimiter: str | None) -> MemberFile:
    if encoding is not None or delimiter is not None:
        raise InvalidInput(f"{path}: --encoding and --delimiter are for CSV, not a workbook")
    from cpms_admin.bulk.xlsx.read import xlsx_header

    names, row = xlsx_header(path)
    return MemberFile(
        path=path,
        fmt="xlsx",
        encoding=None,
        delimiter=None,
        header=check_header(names, path=path, sheet_row=row),
        header_row=row,
    )
