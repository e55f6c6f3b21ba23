"""Reading an XLSX workbook: the header row and the members of its first sheet.

The sheet is parsed as it is read (xlsx/sheet.py, with the standard library's expat), so
memory stays flat whatever the number of rows; the shared strings are held while reading.
openpyxl's read-only mode did the same at two to three times the CPU; python-calamine is
faster still but loads the whole sheet first: bench/xlsx.py measures the three (README,
Performance). openpyxl still writes workbooks, and lends its date-format test here.

Cells come as the text a CSV would hold (cells.cell_text): a NIR or a postcode stored as a
number is read as its digits, and the field's validation then puts back a postcode's lost
zero or names the damage. A row is numbered as the spreadsheet shows it. The limits are a
CSV file's (sniff.py): every part is checked against a ZIP bomb before it is parsed; a row
longer than MAX_LINE_CHARS (never held whole), past MAX_COLUMNS or with a cell that cannot
be read is a problem row, as a bad CSV line is; only broken XML refuses the file, and an
import parses the sheet to its end for that (`check_sheet`) before it writes anything.

Parsing a workbook costs more per row than reading a CSV line, so the rows are parsed in a
child process (`forked`) beside the import's checker, overlapping it instead of adding to
it. They come back in order, in batches, through a pipe whose small buffer keeps the child
a batch or two ahead: memory stays flat. The child is forked with os.fork (the checker,
itself a helper process, may not start a multiprocessing one) and leaves with os._exit,
running none of the parent's clean-ups. If the caller stops early, the child is killed; if
the caller dies, the child's next send fails on the closed pipe and it exits.
"""

import os
import signal
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TypeVar

from cpms_admin.bulk.cells import starts_marked, unguard
from cpms_admin.bulk.rows import IMPORT_COLUMNS, SourceRow, absent_from
from cpms_admin.bulk.sniff import (
    MAX_LINE_CHARS,
    cannot_read,
    check_unzipped,
    too_wide,
)
from cpms_admin.bulk.xlsx.book import Book, Unreadable, feed, make_parser, read_book
from cpms_admin.bulk.xlsx.sheet import TOO_LONG, Row, RowProblem, column_letters, sheet_rows
from cpms_admin.errors import CpmsError, InvalidInput, Refused
from cpms_admin.members.fields import COLUMNS


def _unreadable(path: Path, exc: Exception) -> InvalidInput:
    why = str(exc) if isinstance(exc, Unreadable) else f"{type(exc).__name__}: {exc}"
    return InvalidInput(
        f"{path}: not a workbook that can be read ({why}); save it again as .xlsx (Excel "
        "Workbook) or as CSV UTF-8"
    )


def _opendocument(archive: zipfile.ZipFile) -> bool:
    """An OpenDocument file names its type in its first part, `mimetype`."""
    try:
        return archive.read("mimetype").startswith(b"application/vnd.oasis.opendocument")
    except KeyError:
        return False


@contextmanager
def _first_sheet(path: Path) -> Iterator[tuple[IO[bytes], Book]]:
    """The first sheet of the workbook at `path` (see _sheet_in)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise cannot_read(path, exc) from None
    with handle, _sheet_in(handle, path) as sheet:
        yield sheet


@contextmanager
def _sheet_in(handle: IO[bytes], path: Path) -> Iterator[tuple[IO[bytes], Book]]:
    """The first sheet's XML as it unzips from the workbook open in `handle` (at `path`), and
    the workbook's parts it needs; every part checked against a ZIP bomb first. InvalidInput
    for anything that is not a readable workbook, raised here or while the caller reads the
    sheet."""
    try:
        with zipfile.ZipFile(handle) as archive:
            for part in archive.infolist():
                check_unzipped(path, part.filename, part.file_size, part.compress_size)
            if _opendocument(archive):
                raise InvalidInput(
                    f"{path}: an OpenDocument spreadsheet (LibreOffice's .ods), which is "
                    "not read: save it as .xlsx (Excel 2007-365) or as CSV UTF-8"
                )
            book = read_book(archive)
            with archive.open(book.sheet) as source:
                yield source, book
    except InvalidInput:
        raise
    except Exception as exc:  # a damaged or foreign file fails in many ways, all alike here
        raise _unreadable(path, exc) from None


def _rows(path: Path, first: int) -> Iterator[Row]:
    """The first sheet's rows from row `first` on."""
    with _first_sheet(path) as (source, book):
        for row in sheet_rows(source, book):
            if row[0] >= first:
                yield row


def check_sheet(path: Path) -> None:
    """Parse the whole first sheet, keeping nothing: InvalidInput if its XML (or the ZIP
    around it) is broken anywhere. A workbook is read as it streams, so without this a
    sheet broken near its end would stop an import whose first batches are written; what
    else can be wrong is a row's own problem (sheet.py). About a seventh of reading it."""
    with _first_sheet(path) as (source, _):
        for _ in feed(make_parser(), source):
            pass


def xlsx_header(path: Path) -> tuple[list[str], int]:
    """The first row that has a value, as column names, and its row number."""
    with _first_sheet(path) as (source, book):
        return _header(sheet_rows(source, book), path=path)


def header_in(handle: IO[bytes], *, path: Path) -> list[str]:
    """xlsx_header's names, from the workbook at `path` that the caller opened in `handle`
    (without following a link, say)."""
    with _sheet_in(handle, path) as (source, book):
        return _header(sheet_rows(source, book), path=path)[0]


def _header(rows: Iterable[Row], *, path: Path) -> tuple[list[str], int]:
    for number, texts in rows:
        if isinstance(texts, RowProblem):
            if texts.columns:
                raise too_wide(path, texts.columns)
            if texts.reason == TOO_LONG:
                raise InvalidInput(
                    f"{path}: row {number}, the header, is longer than {MAX_LINE_CHARS:,} "
                    "characters: not a member file"
                )
            raise InvalidInput(f"{path}: row {number}, the header: {texts.cell_problem()}")
        names = [text or "" for text in texts]
        if any(name.strip() for name in names):
            return names, number
    raise InvalidInput(f"{path}: the first sheet is empty; a header row is expected")


def filled_rows(path: Path, first: int) -> Iterator[Row]:
    """The rows from row `first` on that have a value or a problem, with their numbers."""
    for number, texts in _rows(path, first):
        if isinstance(texts, RowProblem) or any(text and not text.isspace() for text in texts):
            yield number, texts


def xlsx_rows(path: Path, *, header: tuple[str, ...], header_row: int) -> Iterator[SourceRow]:
    """The rows below the header, blank ones skipped; a value under no column name is that
    row's problem, as in a CSV file. The workbook is parsed in a helper process (forked)."""
    positions = [position for position, name in enumerate(header) if name in IMPORT_COLUMNS]
    names = [header[position] for position in positions]
    width = len(header)
    unnamed = "" in header
    absent = absent_from(header)

    def values_of(texts: list[str | None]) -> dict[str, str | None]:
        values: dict[str, str | None] = dict.fromkeys(COLUMNS)
        for name, at in zip(names, positions, strict=True):
            text = texts[at] if at < len(texts) else None
            if text:
                text = text.strip()
                values[name] = (unguard(text) if starts_marked(text) else text) or None
        return values

    for number, texts in forked(lambda: filled_rows(path, header_row + 1)):
        if isinstance(texts, RowProblem):
            read = None if texts.cells is None else values_of(texts.cells)
            named = texts.column_name(header)
            field = named if named in IMPORT_COLUMNS else None
            yield SourceRow(number, read, texts.cell_problem(header), absent=absent, field=field)
            continue
        if unnamed or len(texts) > width:
            stray = [
                at
                for at, text in enumerate(texts)
                if text and not text.isspace() and (at >= width or not header[at])
            ]
            if stray:
                where = column_letters(stray[0] + 1)
                yield SourceRow(number, None, f"a value in column {where}, which has no name")
                continue
        yield SourceRow(number, values_of(texts), absent=absent)


# --- the helper process ----------------------------------------------------------------

T = TypeVar("T")
_BATCH = 500


def _send_all(items: Iterable[object], sender: Connection) -> None:
    iterator = iter(items)
    try:
        while batch := list(islice(iterator, _BATCH)):
            sender.send(batch)
        sender.send(None)
    except BrokenPipeError:
        pass  # the caller stopped reading: nothing left to do
    except CpmsError as exc:  # the input turned out unreadable: the caller raises it
        sender.send(exc)
    except Exception as exc:  # a bug: tell the caller rather than leave it waiting
        sender.send(Refused(f"the reading helper failed ({type(exc).__name__}: {exc})"))


def forked(produce: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of `produce()`, computed in a child process (in this one where there is no
    fork), while the caller uses them. An exception of the child's is raised here, as
    CpmsError. See the module docstring."""
    if not hasattr(os, "fork"):
        yield from produce()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        status = 0
        try:
            _send_all(produce(), Connection(write_end, readable=False))
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    receiver = Connection(read_end, writable=False)
    finished = False
    try:
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                raise Refused("the reading helper process stopped unexpectedly") from None
            if message is None:
                finished = True
                return
            if isinstance(message, CpmsError):
                raise message
            yield from message
    finally:
        receiver.close()
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
