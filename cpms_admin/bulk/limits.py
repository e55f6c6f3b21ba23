"""What a member file may be, checked before its content is: bounds that no real file nears
and that keep a wrong or hostile one from costing hours or gigabytes (README, "Limits").

A member's row is a few hundred characters; a spreadsheet saves at most 16,384 columns
(XFD) and 1,048,576 rows per sheet. Each check costs time proportional to what it reads.
"""

from pathlib import Path

from cpms_admin.errors import InvalidInput

MAX_FILE_BYTES = 1 << 30  # 1 GiB: about nine million members as `members export` writes them
MAX_LINE_CHARS = 1 << 16  # 65,536 characters in one line of a CSV or JSON Lines file
MAX_COLUMNS = 16_384  # Excel's last column, XFD
MAX_SHEET_ROWS = 1_048_576  # Excel's last row
# A workbook's parts unzip to about 12 times their size; a ZIP bomb, to hundreds of times.
MAX_UNZIP_RATIO = 100


def check_size(path: Path, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{path}: the file is {size / (1 << 20):,.0f} MiB, more than a member file may be "
            f"({MAX_FILE_BYTES >> 20:,} MiB): split it and import the parts one after the other"
        )


def too_long(path: Path, line: int, *, header: bool = False, start: str = "") -> InvalidInput:
    """A line over MAX_LINE_CHARS; `start` is what was read of it. A header's columns so
    far are counted, so a 10^6-column header says what it is."""
    if header:
        columns = max(start.count(separator) for separator in ";,\t") + 1
        return InvalidInput(
            f"{path}: the header is longer than {MAX_LINE_CHARS:,} characters (more than "
            f"{columns:,} columns; a spreadsheet holds {MAX_COLUMNS:,}): not a member file"
        )
    return InvalidInput(
        f"{path}: line {line} is longer than {MAX_LINE_CHARS:,} characters, which no member "
        "row is: not a member file, or a quote left open"
    )


def check_unzipped(path: Path, part: str, size: int, packed: int) -> None:
    """Refuse a workbook part that would expand like a ZIP bomb (past 1 MiB)."""
    if size > 1 << 20 and size > MAX_UNZIP_RATIO * max(packed, 1):
        raise InvalidInput(
            f"{path}: its part {part} unzips to {size / max(packed, 1):,.0f} times its size, "
            "which no spreadsheet's workbook does: not a member file"
        )


def too_wide(path: Path, columns: int) -> InvalidInput:
    return InvalidInput(
        f"{path}: the header has {columns:,} columns, more than a spreadsheet holds "
        f"({MAX_COLUMNS:,}): not a member file"
    )
