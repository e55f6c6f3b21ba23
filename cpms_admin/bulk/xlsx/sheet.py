"""The rows of a worksheet, parsed as they stream out of the ZIP archive.

expat (C) calls a handler per element; the handlers keep only the row being read, and the
sheet is fed 64 KiB at a time, so memory stays flat whatever the number of rows. This is
two to three times cheaper than openpyxl's read-only mode, which builds an element tree per
row and a dict per cell before giving a value (bench/xlsx.py, README "Performance").

Cells come as the text a CSV would hold (cells.cell_text), as openpyxl read them before:
a shared or inline string (rich-text runs joined), a formula's cached result, a number
without a spurious `.0`, a number whose style is a date format as that date (the same test
and conversion as openpyxl's), an error as written (`#N/A`). A cell missing from a row
(spreadsheets leave empty cells out, `r="C5"` names a cell's column) is None. A
true-or-false cell is no value of a member's (TRUE_OR_FALSE): its row comes as a problem.

A row that cannot be read whole (too long, a cell past the last column, a cell whose value
or reference makes no sense, a formula never calculated: its value is unknown, not empty)
comes as its problem, a rejected row as a bad CSV line is: only
the XML itself, which `check_sheet` parses to its end first, can refuse the sheet half-way.

A formula was never calculated when its cell has no `<v>`, or an empty one in a cell not
typed as a formula's text (`t="str"`). openpyxl writes every formula `<f>...</f><v></v>`,
untyped (a number). A spreadsheet types a formula's result: an empty text is `t="str"` and
`<v></v>` (LibreOffice 7.4 saves `=""` and `=IF(1;"";"x")` so; Excel types a text result
`str` too, by the OOXML spec), any other result has a value (digits, `0`/`1` for a
boolean, an error's name). A program writing `t="str"` and an empty `<v>` without
calculating cannot be told from that empty text.
"""

import re
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from cpms_admin.bulk.cells import cell_text
from cpms_admin.bulk.rows import PIN_HASH, column_name
from cpms_admin.bulk.sniff import MAX_COLUMNS, MAX_LINE_CHARS
from cpms_admin.bulk.xlsx.book import MAIN, Book, Unreadable, feed, make_parser

_CELL, _VALUE, _TEXT, _ROW, _PHONETIC, _FORMULA = range(1, 7)
_TAGS = {
    f"{space} {local}": tag
    for space in MAIN
    for local, tag in (
        ("c", _CELL),
        ("v", _VALUE),
        ("t", _TEXT),
        ("row", _ROW),
        ("rPh", _PHONETIC),
        ("f", _FORMULA),
    )
}
_DIGITS = "0123456789"
_ROW_NUMBER = re.compile(r"[0-9]{1,7}")  # a spreadsheet's rows: 1,048,576 at most


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a row cannot be read: its words; the cell at fault's column, when the words are
    about one cell (`cell_problem` names it), with the text it holds when the words quote it
    (`{}`), and the row's other cells when no other is at fault (`cells`, that one None),
    which an import's `--errors` report gives back to be fixed; its last column when that is
    past MAX_COLUMNS (which no spreadsheet writes)."""

    reason: str
    columns: int = 0
    cell: int = 0
    held: str | None = field(default=None, repr=False)
    cells: list[str | None] | None = field(default=None, repr=False)

    def column_name(self, header: Sequence[str]) -> str:
        """The name the header gives the cell at fault's column, or ""."""
        at = self.cell - 1
        return header[at].strip() if 0 <= at < len(header) else ""

    def cell_problem(self, header: Sequence[str] = ()) -> str:
        """The words, naming the cell's column as the spreadsheet shows it (a letter) and,
        when the header gives one, by its name; a PIN hash is never quoted."""
        if not self.cell:
            return self.reason
        name = self.column_name(header)
        named = f" ({name})" if name else ""
        reason = self.reason
        if self.held is not None:
            secret = column_name(name) == PIN_HASH
            reason = reason.format("a PIN hash" if secret else reprlib.repr(self.held))
        return f"the cell in column {column_letters(self.cell)}{named} {reason}"


Row = tuple[int, list[str | None] | RowProblem]  # its number; its cells, or its problem


def column_letters(number: int) -> str:
    """28 -> `AB`: a column as a spreadsheet shows it."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _column(letters: str) -> int:
    """`AB` -> 28 (`$AB` as well); Unreadable if not letters."""
    number = 0
    for letter in letters.lstrip("$").upper() or "?":
        if not "A" <= letter <= "Z":
            raise Unreadable(f"a cell reference without a column ({letters!r})")
        number = number * 26 + ord(letter) - 64
    return number


def _typed(kind: str, style: str | None, text: str, book: Book) -> str | None:
    """A cell that is not a string, as text; openpyxl's conversions, for the same values."""
    if kind == "n":
        number: float = float(text) if "." in text or "e" in text or "E" in text else int(text)
        if style is not None and int(style) in book.dates:
            from openpyxl.utils.datetime import from_excel

            try:
                moment = from_excel(number, book.epoch, timedelta=int(style) in book.durations)
            except (OverflowError, ValueError):
                return "#VALUE!"  # a date format on a number no date has: openpyxl's value
            return cell_text(moment)
        return cell_text(number)
    if kind == "d":  # an ISO 8601 date cell (strict OOXML; Excel does not write them)
        from openpyxl.utils.datetime import from_ISO8601

        return cell_text(from_ISO8601(text))  # type: ignore[no-untyped-call]
    return text  # `str` (a formula's text), `e` (an error such as #N/A), or unknown


def sheet_rows(source: IO[bytes], book: Book) -> Iterator[Row]:
    """Each row that has cells, in the order of the sheet, with its number; a row that
    cannot be read comes as its problem (see the module docstring). ExpatError when the XML
    itself is broken. Expat's handlers are closures over the row being read rather than
    methods: they run for every tag of the sheet, and reading an enclosing function's
    variable costs less than an object's attribute."""
    strings = book.strings
    done: list[Row] = []
    parts: list[str] = []
    cells: list[str | None] = []
    columns: dict[str, int] = {}  # a reference's letters -> column number, as met
    kind, style = "n", None
    number = column = size = wide = faulty = 0
    problem: RowProblem | None = None  # the row's first unreadable cell, of `faulty`
    collecting = phonetic = False
    unvalued = False  # the cell has a formula, and no result for it yet (module docstring)

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal kind, style, number, column, cells, size, wide, collecting, phonetic, problem
        nonlocal unvalued, faulty
        tag = _TAGS.get(name)
        if tag == _CELL:
            kind, style, unvalued = attrs.get("t", "n"), attrs.get("s"), False
            ref = attrs.get("r")
            if ref is None:
                column += 1
            else:
                letters = ref.rstrip(_DIGITS)
                found = columns.get(letters)
                if found is None:
                    try:
                        found = _column(letters)
                    except Unreadable as exc:  # not cached: every row using it is refused
                        problem = problem or RowProblem(str(exc))
                        found = column + 1
                    else:
                        if found <= MAX_COLUMNS:
                            columns[letters] = found
                column = found
            parts.clear()
        elif tag == _VALUE:
            collecting = kind != "inlineStr"
            if unvalued and kind == "str":
                unvalued = False  # a text result: an empty <v> is an empty text
        elif tag == _FORMULA:
            unvalued = True
        elif tag == _TEXT:
            collecting = kind == "inlineStr" and not phonetic
        elif tag == _ROW:
            ref = attrs.get("r")
            readable = ref is None or _ROW_NUMBER.fullmatch(ref) is not None
            number = int(ref) if ref is not None and readable else number + 1
            cells, column, size, wide, faulty = [], 0, 0, 0, 0
            problem = None if readable else RowProblem(f"a row reference {ref!r}")
        elif tag == _PHONETIC:
            phonetic = True

    def fault(found: RowProblem) -> None:
        """A cell that cannot be read: the row's problem is its first such cell's."""
        nonlocal problem, faulty
        problem, faulty = problem or found, faulty + 1

    def end(name: str) -> None:
        nonlocal collecting, phonetic, size, wide
        tag = _TAGS.get(name)
        if tag == _CELL:
            if column > MAX_COLUMNS:
                wide = max(wide, column)
                return
            if unvalued and not parts:  # no <v>, or an empty one that is no text
                fault(RowProblem(UNCALCULATED, cell=column))
                return
            if not parts:
                value = None
            else:
                text = parts[0] if len(parts) == 1 else "".join(parts)
                if kind == "b":  # no column of a member is true-or-false: a name it was
                    fault(RowProblem(TRUE_OR_FALSE, cell=column, held=_BOOLEANS.get(text, text)))
                    return
                try:
                    if kind == "s":
                        value = strings[int(text)]
                        size += len(value) - len(text)  # the string's length, not its index's
                    elif kind in ("inlineStr", "str"):
                        value = text
                    else:
                        value = _typed(kind, style, text, book)
                except IndexError:
                    fault(RowProblem(_NO_SUCH_TEXT, cell=column))
                    return
                except (ValueError, OverflowError):
                    fault(RowProblem(_NOT_ITS_TYPE, cell=column, held=text))
                    return
            at = column - 1
            if at == len(cells):
                cells.append(value)
            elif at > len(cells):
                cells.extend([None] * (at - len(cells)))
                cells.append(value)
            elif at >= 0:
                cells[at] = value
        elif tag in (_VALUE, _TEXT):
            collecting = False
        elif tag == _ROW:
            if wide:
                done.append((number, RowProblem(_past_last(wide), wide)))
            elif size > MAX_LINE_CHARS:
                done.append((number, RowProblem(TOO_LONG)))
            elif problem is not None and problem.cell and faulty == 1:
                done.append((number, replace(problem, cells=cells)))
            elif problem is not None:
                done.append((number, problem))
            elif cells:
                done.append((number, cells))
        elif tag == _PHONETIC:
            phonetic = False

    def text(data: str) -> None:
        nonlocal size
        if collecting:
            size += len(data)
            if size <= MAX_LINE_CHARS:
                parts.append(data)

    parser = make_parser()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    for _ in feed(parser, source):
        yield from done
        done.clear()


TOO_LONG = f"a row longer than {MAX_LINE_CHARS:,} characters"
_NO_SUCH_TEXT = "cannot be read (it points to a text the workbook does not hold)"


_NOT_ITS_TYPE = "cannot be read (it holds {}, which is not a value of its type)"

# A spreadsheet turns a cell typed Vrai, Faux, True or False into a true-or-false value, shown
# VRAI or FAUX in French: a surname Faux comes as FALSE.
TRUE_OR_FALSE = (
    "holds {}, a true-or-false value (VRAI or FAUX in French), not text: a spreadsheet "
    "turns Vrai, Faux, True or False typed in a cell into one; give the column the Text "
    "format and type the value again"
)
_BOOLEANS = {"1": "TRUE", "0": "FALSE"}


UNCALCULATED = (
    "holds a formula without its result (the file was written by a program that does not "
    "compute formulas): open it in a spreadsheet and save it again, or paste the values"
)


def _past_last(column: int) -> str:
    return f"a cell in column {column:,}, past a spreadsheet's last ({MAX_COLUMNS:,})"
