"""What a workbook's rows need from the rest of the package: which part is the first sheet,
the shared strings, which cell styles are dates, and the date system.

A workbook is a ZIP of XML parts: `_rels/.rels` names the workbook part (`xl/workbook.xml`
as Excel and LibreOffice write it), whose relationships name its sheets, its shared strings
and its styles. The first sheet is the first worksheet listed in the workbook that is not
hidden, the first tab a spreadsheet shows (a chart sheet has no rows; a hidden sheet is often
an old copy kept out of sight), wherever its part is and whatever it is called. Every
part is parsed with the standard library's expat, refusing a DTD (no spreadsheet writes
one: it would only serve to declare entities). The shared strings are held in memory
while the sheet is read, as every reader does; the other parts are small.
"""

import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, NoReturn
from xml.parsers import expat

# Transitional (what Excel and LibreOffice write) and strict Office Open XML.
MAIN = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",
)
_RELATION = (  # the namespace of a sheet's r:id
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "http://purl.oclc.org/ooxml/officeDocument/relationships",
)
_CHUNK = 1 << 16


class Unreadable(Exception):
    """The package is not a workbook as a spreadsheet writes one (the message says why)."""


def _no_dtd(*_: object) -> NoReturn:
    raise Unreadable("a part declares a DTD, which no spreadsheet writes")


def make_parser() -> expat.XMLParserType:
    """An expat parser giving names as "namespace local"; a DTD refuses the part."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _no_dtd
    parser.buffer_text = True
    return parser


def feed(parser: expat.XMLParserType, source: IO[bytes]) -> Iterator[None]:
    """Parse `source` a chunk at a time, pausing after each for the caller to take what the
    handlers made of it."""
    while chunk := source.read(_CHUNK):
        parser.Parse(chunk, False)
        yield
    parser.Parse(b"", True)
    yield


def _local(name: str) -> str:
    return name.rpartition(" ")[2]


def _start_tags(archive: zipfile.ZipFile, part: str) -> list[tuple[str, dict[str, str]]]:
    """Each element's local name and attributes, in order (for the small parts)."""
    tags: list[tuple[str, dict[str, str]]] = []
    parser = make_parser()
    parser.StartElementHandler = lambda name, attrs: tags.append((_local(name), attrs))
    with archive.open(part) as source:
        for _ in feed(parser, source):
            pass
    return tags


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """The relationships of `part`, by id: (type's last word, target part's name)."""
    folder, name = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", f"{name}.rels")
    if rels not in archive.NameToInfo:
        return {}
    found = {}
    for tag, attrs in _start_tags(archive, rels):
        if tag == "Relationship" and attrs.get("TargetMode") != "External":
            target = attrs.get("Target", "")
            if target.startswith("/"):
                target = target[1:]
            else:
                target = posixpath.normpath(posixpath.join(folder, target))
            found[attrs.get("Id", "")] = (attrs.get("Type", "").rpartition("/")[2], target)
    return found


@dataclass(frozen=True)
class Book:
    sheet: str  # the first visible worksheet's part
    strings: list[str] = field(default_factory=list)
    dates: frozenset[int] = frozenset()  # the cell styles that show a number as a date
    durations: frozenset[int] = frozenset()  # ... as a duration ([h]:mm)
    epoch: datetime = datetime(1899, 12, 30)  # day 0 of the 1900 date system


def read_book(archive: zipfile.ZipFile) -> Book:
    """The first visible worksheet and what reading it needs; Unreadable if there is none."""
    from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH

    document = next(
        (
            target
            for kind, target in _relationships(archive, "").values()
            if kind == "officeDocument"
        ),
        "xl/workbook.xml",
    )
    related = _relationships(archive, document)
    sheets, epoch = [], WINDOWS_EPOCH
    for tag, attrs in _start_tags(archive, document):
        if tag == "workbookPr" and attrs.get("date1904", "0") not in ("0", "false", "f"):
            epoch = MAC_EPOCH
        elif tag == "sheet":
            ids = [attrs[f"{space} id"] for space in _RELATION if f"{space} id" in attrs]
            kind, target = related.get(ids[0] if ids else "", ("", ""))
            sheets.append((kind, target, attrs.get("state", "visible") == "visible"))
    worksheets = [(target, shown) for kind, target, shown in sheets if kind == "worksheet"]
    if not worksheets:
        raise Unreadable("the workbook has no worksheet")
    # Every sheet hidden (no spreadsheet saves that): the first, rather than none.
    sheet = next((target for target, shown in worksheets if shown), worksheets[0][0])
    parts = {kind: target for kind, target in related.values()}
    strings = _shared_strings(archive, parts["sharedStrings"]) if "sharedStrings" in parts else []
    dates, durations = _date_styles(archive, parts["styles"]) if "styles" in parts else ({}, {})
    return Book(sheet, strings, frozenset(dates), frozenset(durations), epoch)


def _shared_strings(archive: zipfile.ZipFile, part: str) -> list[str]:
    """Each `<si>`'s text: its `<t>`, or its rich-text runs' `<t>`s joined; phonetic
    readings (`<rPh>`, for Japanese) left out, as Excel shows the cell."""
    strings: list[str] = []
    parts: list[str] = []
    collecting = phonetic = False

    def start(name: str, _: dict[str, str]) -> None:
        nonlocal collecting, phonetic
        local = _local(name)
        if local == "t":
            collecting = not phonetic
        elif local == "rPh":
            phonetic = True
        elif local == "si":
            parts.clear()

    def end(name: str) -> None:
        nonlocal collecting, phonetic
        local = _local(name)
        if local == "t":
            collecting = False
        elif local == "rPh":
            phonetic = False
        elif local == "si":
            text = "".join(parts)
            # Excel writes a literal `_x` as `_x005F_x`; openpyxl read it back the same way.
            strings.append(text.replace("x005F_", "") if "x005F_" in text else text)

    def text(data: str) -> None:
        if collecting:
            parts.append(data)

    parser = make_parser()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    with archive.open(part) as source:
        for _ in feed(parser, source):
            pass
    return strings


def _date_styles(archive: zipfile.ZipFile, part: str) -> tuple[set[int], set[int]]:
    """The cell styles (`s` of a cell, an index into `<cellXfs>`) whose number format shows
    a date or a duration, decided as openpyxl decides it."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

    formats: dict[int, str] = dict(BUILTIN_FORMATS)
    styles: list[int] = []
    inside = ""
    for tag, attrs in _start_tags(archive, part):
        if tag in ("cellXfs", "cellStyleXfs", "dxfs"):
            inside = tag
        elif tag == "numFmt" and "numFmtId" in attrs and inside == "":
            formats[int(attrs["numFmtId"])] = attrs.get("formatCode", "")
        elif tag == "xf" and inside == "cellXfs":
            styles.append(int(attrs.get("numFmtId", "0")))
    dates = {at for at, number in enumerate(styles) if is_date_format(formats.get(number))}
    durations = {at for at in dates if is_timedelta_format(formats[styles[at]])}
    return dates, durations
