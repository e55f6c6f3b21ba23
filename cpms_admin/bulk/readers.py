"""Streaming readers: one SourceRow per record, a bad record is a problem row, not a failure."""

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from cpms_admin.bulk.cells import starts_marked, unguard
from cpms_admin.bulk.rows import (
    IMPORT_COLUMNS,
    REPORT_COLUMNS,
    SourceRow,
    absent_from,
    clean_value,
    column_name,
)
from cpms_admin.bulk.sniff import MAX_COLUMNS, MAX_LINE_CHARS, open_text, too_wide
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS, REQUIRED

Record = tuple[int, list[str] | None, str | None]  # start line, fields, problem


class _LineTooLong(Exception):
    """A line over MAX_LINE_CHARS, skipped (see _Tap)."""


class _Tap:
    """The file's lines, counted, keeping those of the current record so it can be re-read.
    A line over MAX_LINE_CHARS is never read whole: its rest is skipped and _LineTooLong
    raised, for the record to be a problem row. Whether the skipped line left a quoted value
    open is told by its quotes: an odd number (`opens_quote`)."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.number = 0  # lines read so far
        self.lines: list[str] = []
        self.opens_quote = False  # the last line skipped

    def __iter__(self) -> "_Tap":
        return self

    def __next__(self) -> str:
        line = self._handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_LINE_CHARS:
            quotes = line.count('"')
            while not line.endswith(("\n", "\r")) and (
                line := self._handle.readline(MAX_LINE_CHARS)
            ):
                quotes += line.count('"')
            self.opens_quote = quotes % 2 == 1
            raise _LineTooLong
        self.lines.append(line)
        return line


def csv_records(handle: TextIO, *, path: Path, delimiter: str) -> Iterator[Record]:
    """Each non-blank record with the line it starts on.

    Parsing is strict so that an unbalanced quote is noticed: if it swallowed other lines,
    the file is refused (those records would otherwise vanish without a trace). A
    one-line error is re-read leniently, which accepts padding after a closing quote. A
    line over MAX_LINE_CHARS is a problem record; the file is refused if that line is inside
    a quoted record or opens one (the lines after it would be read as records where they
    are the quoted value's); memory stays bounded either way.
    """
    tap = _Tap(handle)
    reader = csv.reader(tap, delimiter=delimiter, skipinitialspace=True, strict=True)
    while True:
        start = tap.number + 1
        tap.lines.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _LineTooLong:
            if tap.number > start:
                raise InvalidInput(
                    f"{path}: lines {start}-{tap.number}: a line longer than "
                    f"{MAX_LINE_CHARS:,} characters inside a quoted value (unbalanced quote?)"
                ) from None
            if tap.opens_quote:
                raise InvalidInput(
                    f"{path}: line {start}: a line longer than {MAX_LINE_CHARS:,} characters "
                    "opens a quoted value it does not close (unbalanced quote?)"
                ) from None
            yield start, None, f"line longer than {MAX_LINE_CHARS:,} characters"
            continue
        except csv.Error as exc:
            if len(tap.lines) > 1:
                raise InvalidInput(
                    f"{path}: lines {start}-{tap.number}: {exc} (unbalanced quote?)"
                ) from None
            try:
                fields = next(csv.reader(tap.lines, delimiter=delimiter, skipinitialspace=True))
            except csv.Error as lenient_exc:
                yield start, None, f"malformed CSV line: {lenient_exc}"
                continue
        if "".join(fields).strip():  # not a blank line, nor one of Excel's ";;;;;" rows
            yield start, fields, None


def reads_cleanly(handle: TextIO, *, delimiter: str) -> bool:
    """Whether every record parses strictly and no line is longer than MAX_LINE_CHARS: then
    `csv_records` raises nothing on the file. Several times cheaper than it (no line kept,
    no record built), so that checking a million-row file before importing it is quick; a
    file it says False of is read again by `csv_records`, which says what is wrong."""

    def lines() -> Iterator[str]:
        while line := handle.readline(MAX_LINE_CHARS + 1):
            if len(line) > MAX_LINE_CHARS:
                raise _LineTooLong
            yield line

    try:
        for _ in csv.reader(lines(), delimiter=delimiter, skipinitialspace=True, strict=True):
            pass
    except (csv.Error, _LineTooLong):
        return False
    return True


def _listed(items: list[str], most: int = 10) -> str:
    more = f" and {len(items) - most:,} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def check_header(fields: list[str], *, path: Path, sheet_row: int | None = None) -> tuple[str, ...]:
    """Clean column names; refuse unknown, missing or repeated ones (safer for migration).
    Linear in the number of columns, and refused at once beyond MAX_COLUMNS. `sheet_row`:
    the workbook row they come from (a CSV file's first line otherwise)."""
    if len(fields) > MAX_COLUMNS:
        raise too_wide(path, len(fields))
    names = tuple(column_name(field) for field in fields)
    counts = Counter(names)
    known = {*IMPORT_COLUMNS, ""}  # a blank name comes from a trailing separator
    if all(name in counts for name in REPORT_COLUMNS):
        known.update(REPORT_COLUMNS)  # a fixed `--errors` report imports as it is
    unknown = [name for name in names if name not in known]
    missing = [name for name in REQUIRED if name not in counts]
    repeated = sorted(name for name, count in counts.items() if name and count > 1)
    problems = [
        f"{label}: {_listed(items)}"
        for label, items in (
            ("unknown columns", unknown),
            ("missing required columns", missing),
            ("repeated columns", repeated),
        )
        if items
    ]
    if problems:
        if sheet_row is None:
            hint = " (wrong separator? give --delimiter)" if len(names) == 1 else ""
        elif [name for name in names if name] == unknown[:1]:  # one cell, no column's name
            hint = (
                f" (row {sheet_row}, the sheet's first with a value, is read as the column "
                "names: delete a title row above them)"
            )
        else:
            hint = ""
        raise InvalidInput(f"{path}: {'; '.join(problems)}{hint}")
    return names


def csv_rows(
    path: Path, *, encoding: str, delimiter: str, header: tuple[str, ...]
) -> Iterator[SourceRow]:
    # Hot loop (100,000+ rows): positions are worked out once, values cleaned inline.
    positions = [position for position, name in enumerate(header) if name in IMPORT_COLUMNS]
    names = [header[position] for position in positions]
    unnamed = [position for position, name in enumerate(header) if not name]
    absent = absent_from(header)
    with open_text(path, encoding) as handle:
        records = csv_records(handle, path=path, delimiter=delimiter)
        next(records, None)  # the header, checked when the file was opened
        for line, fields, problem in records:
            if fields is None:
                yield SourceRow(line, None, problem)
            elif len(fields) != len(header):
                yield SourceRow(line, None, _miscounted(len(header), len(fields), delimiter))
            elif stray := [position + 1 for position in unnamed if fields[position].strip()]:
                yield SourceRow(line, None, f"a value in column {stray[0]}, which has no name")
            else:
                values: dict[str, str | None] = dict.fromkeys(COLUMNS)
                cleaned = [fields[at].strip() or None for at in positions]
                values.update(zip(names, cleaned, strict=True))
                for name, value in zip(names, cleaned, strict=True):
                    if value and starts_marked(value):  # the formula guard, Excel's `="..."`
                        values[name] = unguard(value) or None
                yield SourceRow(line, values, absent=absent)


def _miscounted(expected: int, found: int, delimiter: str) -> str:
    """Why a row has the wrong number of fields, as far as it can be told: the agent fixes
    the row in the file (the report cannot give its values column by column)."""
    why = (
        f"a value holding {delimiter!r} must be in double quotes"
        if found > expected
        else "a line break inside a value not in double quotes, or empty fields at the end left out"
    )
    return f"expected {expected} fields, found {found} ({why})"


class _Members(list[tuple[str, Any]]):
    """A JSON object's members in order, a key given twice kept twice (a dict keeps the last
    one silently, as a CSV header with a column twice is refused)."""


def _load(line: str) -> Any:
    # Numbers are kept as written: 01000 stays a string, 1.10 does not become 1.1.
    return json.loads(line, parse_int=str, parse_float=str, object_pairs_hook=_Members)


def jsonl_columns(head: str, *, path: Path) -> tuple[str, ...]:
    """The keys of the first object: unknown ones there refuse the file, as a CSV header
    would; a later line with an unknown key is only that row's problem. A file with no line,
    or whose first line begins no object (a CSV given `--format jsonl`), is refused whole, as
    a CSV file without its header is."""
    if not head:
        raise InvalidInput(f"{path}: the file is empty; one JSON object per line is expected")
    start = head.lstrip().lstrip("\ufeff").lstrip()  # a BOM a codec kept (utf-16-le)
    if start.startswith("["):
        raise InvalidInput(f"{path}: a JSON array is not supported; write one object per line")
    if not start.startswith("{"):
        raise InvalidInput(
            f"{path}: not JSON Lines: its first line begins no JSON object (a CSV file? "
            "--format csv)"
        )
    try:
        first = _load(head)
    except (ValueError, RecursionError):
        return COLUMNS
    if not isinstance(first, _Members):
        return COLUMNS
    names = tuple(dict.fromkeys(column_name(key) for key, _ in first))
    unknown = [name for name in names if name not in IMPORT_COLUMNS]
    if unknown:
        raise InvalidInput(f"{path}: unknown fields: {', '.join(unknown)}")
    return names


def jsonl_rows(path: Path, *, encoding: str) -> Iterator[SourceRow]:
    """One row per non-blank line; a line over MAX_LINE_CHARS is that row's problem (each
    line stands alone) and is skipped without being read whole. Each line says which
    fields it has: a key it leaves out is absent for that row only."""
    absences: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per key set: pickles once
    with open_text(path, encoding) as handle:
        number = 0
        while line := handle.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                while not line.endswith(("\n", "\r")) and (line := handle.readline(MAX_LINE_CHARS)):
                    pass
                yield SourceRow(number, None, f"longer than {MAX_LINE_CHARS:,} characters")
            elif line.strip():
                yield _jsonl_row(number, line, absences)


# JSON's `\\ud83d` escapes may name half of a character, which no UTF-8 text can hold: the
# error report could not write it, nor the database store it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _jsonl_row(line: int, text: str, absences: dict[tuple[str, ...], tuple[str, ...]]) -> SourceRow:
    try:
        obj = _load(text.rstrip("\r\n"))  # a line cut inside a string: not its line end's fault
    except json.JSONDecodeError as exc:
        where = "" if exc.msg.endswith(" at") else " at"  # "Unterminated string starting at"
        return SourceRow(line, None, f"not valid JSON ({exc.msg}{where} column {exc.colno})")
    except (ValueError, RecursionError):
        return SourceRow(line, None, "not valid JSON")
    if not isinstance(obj, _Members):
        return SourceRow(line, None, "not a JSON object: each line must be {...}")
    values: dict[str, str | None] = dict.fromkeys(COLUMNS)
    given: set[str] = set()
    for key, raw in obj:
        name = column_name(key)
        if name not in IMPORT_COLUMNS:
            return SourceRow(line, None, f"unknown field {key!r}")
        if name in given:
            return SourceRow(line, None, f"{name} is given twice")
        if raw is not None and not isinstance(raw, str):
            return SourceRow(line, None, f"{name}: expected a string, a number or null")
        if raw is not None and (cut := _LONE_SURROGATE.search(raw)):
            return SourceRow(
                line,
                None,
                f"{name}: U+{ord(cut.group()):04X} is half of a character (a program cut it in "
                "two): not text any file can hold",
            )
        given.add(name)
        values[name] = None if raw is None else clean_value(raw)
    absent = absent_from(given)
    return SourceRow(line, values, absent=absences.setdefault(absent, absent))
