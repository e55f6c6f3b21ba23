"""What spreadsheets do to a value, undone both ways: the formula guard, Excel's text
protection, and typed workbook cells read as text.

- The formula guard (CSV and XLSX exports, the `--errors` report): a value that starts with
  `= + - @` would run as a formula where a spreadsheet opens the file, so it gets a leading
  `'`. A value already starting with `'` and one of those gets one more, so that reading
  takes exactly one `'` off and every value comes back as it was. Import refuses those
  starts in names and addresses anyway (`postal.clean_line`, `fields.parse_email`); the
  guard covers every other text and values stored before that rule.
- Excel's protection (`members export --excel`): French Excel turns `01000` into 1000 and a
  NIR into `1,85058E+14`; written `="01000"`, the cell is a formula giving the text, which
  Excel shows and saves back as `01000`. Reading unwraps it, should the file come back as
  written.
"""

from datetime import date, datetime, time

from cpms_admin.members.postal import FORMULA_STARTS

_RUNS = frozenset(FORMULA_STARTS)
_MARKED = _RUNS | {"'"}  # the first characters guard() or unguard() may change
MARKED = _MARKED  # for hot loops that inline `starts_marked`


def guard(value: str) -> str:
    """`value` as a spreadsheet shows it, never run: see the module docstring."""
    if value[:1] in _MARKED and value.lstrip("'")[:1] in _RUNS:
        return "'" + value
    return value


def unguard(value: str) -> str:
    """What guard() or the `--excel` protection was given (anything else is left as is)."""
    first = value[:1]
    if first == "'" and value.lstrip("'")[:1] in _RUNS:
        return value[1:]
    if first == "=" and value[1:2] == '"' and value.endswith('"') and len(value) > 2:
        inner = value[2:-1]
        if '"' not in inner:
            return inner
    return value


def starts_marked(value: str) -> bool:
    """Whether guard() or unguard() may change `value`: one cheap test for the hot loops."""
    return value[:1] in _MARKED


def protect(value: str) -> str:
    """For `--excel`: a value Excel would take for a number or a date, as the formula that
    gives it as text (`="01000"`); guarded instead if it holds a quote (it never does)."""
    return guard(value) if '"' in value else f'="{value}"'


def cell_text(value: object) -> str | None:
    """A workbook cell as the text a CSV would hold: numbers without a spurious `.0`
    (a postcode typed 1000 is `1000`, a NIR stored as a number its 15 digits), a date cell
    as an ISO date, a moment as ISO 8601."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None and value.time() == time(0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)
