"""What a member file is, before its content is read: its format, encoding and CSV
separator as office software wrote them, guessed; and the limits it must keep (README,
"Limits"), bounds no real file nears that keep a wrong or hostile one from costing hours
or gigabytes. A member's row is a few hundred characters; a spreadsheet saves at most
16,384 columns (XFD). Each check costs time proportional to what it reads."""

import codecs
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from cpms_admin.bulk.code_pages import check_windows_1252
from cpms_admin.errors import InvalidInput

MAX_FILE_BYTES = 1 << 30  # 1 GiB: about nine million members as `members export` writes them
MAX_LINE_CHARS = 1 << 16  # 65,536 characters in one line of a CSV or JSON Lines file
MAX_COLUMNS = 16_384  # Excel's last column, XFD
# A workbook's parts unzip to about 12 times their size; a ZIP bomb, to hundreds of times.
MAX_UNZIP_RATIO = 100


def check_size(path: Path, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{path}: the file is {size / (1 << 20):,.0f} MiB, more than a member file may be "
            f"({MAX_FILE_BYTES >> 20:,} MiB): split it and import the parts one after the other"
        )


def header_too_long(path: Path, start: str) -> InvalidInput:
    """A first line over MAX_LINE_CHARS; `start` is what was read of it: a JSON Lines record
    (whose keys the file's columns are read from), or a header whose columns are counted, so
    that a 10^6-column header says what it is."""
    if start.lstrip().startswith("{"):
        return InvalidInput(
            f"{path}: line 1 is longer than {MAX_LINE_CHARS:,} characters, which no member's "
            "record is: the columns are read from it, so the file cannot be"
        )
    columns = max(start.count(separator) for separator in _SEPARATORS) + 1
    return InvalidInput(
        f"{path}: the header is longer than {MAX_LINE_CHARS:,} characters (more than "
        f"{columns:,} columns; a spreadsheet holds {MAX_COLUMNS:,}): not a member file"
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


FORMATS = ("csv", "jsonl", "xlsx")
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
ZIP_MAGIC = b"PK\x03\x04"  # an XLSX workbook is a ZIP archive
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # an old .xls workbook, or an encrypted .xlsx
_SEPARATORS = (";", ",", "\t")  # on a tie, `;` wins: French office software uses it
_CHUNK = 1 << 18


def codec_for(encoding: str) -> str:
    """The codec to open a file with: UTF-8 tolerates a BOM, which Excel likes to add."""
    return "utf-8-sig" if encoding == "utf-8" else encoding


@contextmanager
def open_text(path: Path, encoding: str) -> Iterator[TextIO]:
    """Open for reading; `newline=""` keeps quoted line breaks for the csv module.

    A UTF-8 BOM is skipped in the other encodings too: Excel's "CSV UTF-8" starts with one,
    and once a Windows-1252 row is pasted in, the file is read as Windows-1252, where the
    BOM would be `ï»¿` stuck to the first column's name. (UTF-16's codec takes its own.)"""
    try:
        with open(path, encoding=codec_for(encoding), newline="") as handle:
            if not encoding.startswith("utf") and handle.buffer.read(3) != codecs.BOM_UTF8:
                handle.seek(0)  # nothing was decoded yet: back to the first byte
            yield handle
    except UnicodeError:  # only if the file changed after it was checked
        raise InvalidInput(f"{path}: not valid {encoding}; give --encoding") from None
    except OSError as exc:
        raise cannot_read(path, exc) from None


def cannot_read(path: Path, exc: OSError) -> InvalidInput:
    return InvalidInput(f"{path}: cannot read the file ({exc.strerror or exc})")


def _bad_line(path: Path, encoding: str) -> int | None:
    """The line of the first byte `encoding` cannot decode, or None; streams the whole file
    so a bad byte on row 90,000 is found before anything is imported."""
    decoder = codecs.getincrementaldecoder(codec_for(encoding))(errors="strict")
    line = 1
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                try:
                    decoder.decode(chunk)
                except UnicodeError as exc:
                    return line + chunk[: _failed_at(exc)].count(b"\n")
                line += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeError:
        return line
    except OSError as exc:
        raise cannot_read(path, exc) from None
    return None


def _failed_at(exc: UnicodeError) -> int:
    """Where decoding failed; 0 for a codec that raises the plain UnicodeError (punycode)."""
    return max(exc.start, 0) if isinstance(exc, UnicodeDecodeError) else 0


def text_encoding(encoding: str) -> str:
    """The codec's name for an encoding given by its user; InvalidInput for an unknown one,
    or a codec that is not a text encoding (rot13, base64, undefined)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise InvalidInput(f"unknown encoding {encoding!r}") from None
    if not info._is_text_encoding or info.name == "undefined":  # as open() checks
        raise InvalidInput(f"{encoding!r} is not a text encoding")
    return info.name


def _candidates(head: bytes) -> tuple[str, ...]:
    """The encodings to try, in order, for a file starting with `head`."""
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):  # Excel's "Unicode text"
        return ("utf-16",)
    return ("utf-8", "cp1252")


def resolve_encoding(path: Path, encoding: str | None) -> str:
    """The given encoding (checked), else UTF-8 / UTF-16 (by BOM) / Windows-1252."""
    if encoding is not None:
        name = text_encoding(encoding)
        bad = _bad_line(path, name)
        if bad is not None:
            raise InvalidInput(f"{path}: line {bad} is not valid {name}")
        return name
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError as exc:
        raise cannot_read(path, exc) from None
    candidates = _candidates(head)
    for name in candidates:
        bad = _bad_line(path, name)
        if bad is None:
            if name == "cp1252":  # guessed: maybe another code page that reads as it does
                check_windows_1252(path)
            return name
    raise InvalidInput(
        f"{path}: line {bad} is not valid {' or '.join(candidates)}; give --encoding"
    )


def decode_whole(path: Path, raw: bytes, encoding: str | None) -> str:
    """A small file read whole (a pipe can be read only once), decoded by the rules of
    resolve_encoding and open_text: the given encoding or the first that reads it, without a
    byte order mark."""
    candidates = (text_encoding(encoding),) if encoding else _candidates(raw)
    for name in candidates:
        body = raw if name.startswith("utf") else raw.removeprefix(codecs.BOM_UTF8)
        try:
            return body.decode(codec_for(name)).removeprefix("\ufeff")
        except UnicodeError as exc:
            bad = body[: _failed_at(exc)].count(b"\n") + 1
    raise InvalidInput(
        f"{path}: line {bad} is not valid {' or '.join(candidates)}; give --encoding"
    )


def first_line(path: Path, encoding: str) -> str:
    """The first non-blank line, or "" for an empty file; never read past MAX_LINE_CHARS."""
    with open_text(path, encoding) as handle:
        while line := handle.readline(MAX_LINE_CHARS + 1):
            if len(line) > MAX_LINE_CHARS:
                raise header_too_long(path, line)
            if line.strip():
                return line
    return ""


def magic(path: Path) -> bytes:
    """The file's first four bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4)
    except OSError as exc:
        raise cannot_read(path, exc) from None


def check_binary(path: Path, head: bytes, fmt: str | None) -> None:
    """Refuse, saying what it is, a workbook given as text or an old one given at all."""
    if head == _OLE_MAGIC:
        raise InvalidInput(
            f"{path}: an old Excel .xls workbook, or an encrypted one: save it as .xlsx "
            "(Excel Workbook, without a password) or as CSV UTF-8"
        )
    if head == ZIP_MAGIC and fmt not in (None, "xlsx"):
        raise InvalidInput(f"{path}: a ZIP archive, not {fmt}: for an XLSX workbook, --format xlsx")


def resolve_format(path: Path, *, fmt: str | None, head: str) -> str:
    """Explicit format, else the extension, else the first character (`{` means JSONL)."""
    if fmt is not None:
        return check_format(fmt)
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension is not None:
        return by_extension
    return "jsonl" if head.lstrip().startswith(("{", "[")) else "csv"


def output_format(path: Path | None, fmt: str | None) -> str:
    """An export's format: `fmt`, else its file's extension (as `resolve_format` reads it back),
    else CSV. A name that says another format than `fmt` is refused: a CSV named `.xlsx`
    opens in no spreadsheet and does not import back."""
    named = _EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if fmt is None:
        return named or "csv"
    fmt = check_format(fmt).lower()
    if named is not None and named != fmt:
        raise InvalidInput(
            f"--out {path} is named for {named}, but --format is {fmt}: give a name that "
            f"ends as the format does, or leave --format out to take it from the name"
        )
    return fmt


def check_format(fmt: str) -> str:
    if fmt.lower() not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: use csv, jsonl or xlsx")
    return fmt.lower()


def _count_outside_quotes(line: str, separator: str) -> int:
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            count += 1
    return count


def resolve_delimiter(delimiter: str | None, *, header: str) -> str:
    """The given separator (`tab` or `\\t` for a tab), else the commonest one in the header."""
    if delimiter is not None:
        value = "\t" if delimiter.lower() in ("tab", "\\t") else delimiter
        if len(value) != 1 or value in ('"', "\r", "\n"):
            raise InvalidInput(f"invalid delimiter {delimiter!r}: give one character, e.g. ';'")
        return value
    counts = {sep: _count_outside_quotes(header, sep) for sep in _SEPARATORS}
    best = max(_SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","
