"""Spreadsheet damage, named: what a spreadsheet did to a value on its way to an import, and
how to avoid it. Each function returns the refusal's wording, or None when the value does
not look damaged (the field's own refusal then stands).

What a spreadsheet does to a CSV it opens and saves (French Excel, LibreOffice):

- a NIR becomes a number shown `1,85058E+14`, and is saved so: its last nine digits are gone;
- a postcode loses its leading zero (`01000` -> `1000`);
- a date whose column lost its format is saved as its serial number (`31179`);
- saved as Windows-1252 ("CSV (séparateur: point-virgule)"), a letter that code page lacks
  (`ễ`, `Ł`) becomes `?`; a file decoded with the wrong encoding shows U+FFFD instead;
- a UTF-8 file read as Windows-1252 (or a value copied from such a screen) turns each
  accented letter into two (`é` -> `Ã©`, `ê` -> `Ãª`, `’` -> `â€™`).
"""

import re
from datetime import date, timedelta

AVOID = (
    "to avoid it, give this column the Text format before the values go in (a CSV: in the "
    "dialog that opens it), or export with `members export --excel` or `--format xlsx`, "
    "which keep it as text"
)
_SCIENTIFIC = re.compile(r"[+-]?\d(?:[.,]\d*)?[eE][+-]?\d+")
_DECIMAL = re.compile(r"\d+[.,]\d+")
_ZERO_DECIMALS = re.compile(r"(\d{15})[.,]0+")
_ALL_DIGITS_SCIENTIFIC = re.compile(r"(\d)[.,](\d{14})[eE]\+?14")  # 2.90017512300469E+14
_SERIAL = re.compile(r"\d{5}(?:[.,]\d+)?")  # 10000 is 1927-05-18, 99999 is 2173-10-14
_DAY_AND_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?")
# Excel's and LibreOffice's error values, in English and as French Excel writes them (a
# space may come before `!` or `?`); `Err:502` is LibreOffice's numbered form.
_FORMULA_ERROR = re.compile(
    r"#(?:N/A|DIV/0|VALUE|VALEUR|REF|NAME|NOM|NUM|NOMBRE|NULL|NUL|SPILL|PROPAGATION|CALC"
    r"|FIELD|CHAMP|BLOCKED|BLOQUÉ|CONNECT|BUSY|OCCUPÉ|UNKNOWN|INCONNU) ?[!?]?"
    r"|#GETTING_DATA|#OBTENTION_DONNÉES|Err:\d{3}",
    re.IGNORECASE,
)
_EXCEL_DAY_ZERO = date(1899, 12, 30)  # serials from 1900-03-01 on count from here


def intact_nir_number(raw: str) -> str | None:
    """The 15 digits of a NIR a program wrote as a number with every digit there: with zero
    decimals (`290017512300469.0`, what pandas writes for a float column), or in scientific
    notation with 14 decimals (`2.90017512300469E+14`): a float holds 15 digits exactly, so
    none is lost. None for anything else (`1,85058E+14` lost nine)."""
    text = raw.strip()
    if found := _ZERO_DECIMALS.fullmatch(text):
        return found.group(1)
    if found := _ALL_DIGITS_SCIENTIFIC.fullmatch(text):
        return found.group(1) + found.group(2)
    return None


def nir_damage(raw: str) -> str | None:
    """A NIR a spreadsheet made a number of: in scientific notation, rounded (a NIR never
    ends in 00: its key is 01 to 97), or with decimals."""
    text = raw.strip()
    if _SCIENTIFIC.fullmatch(text):
        done = "turned it into a number written in scientific notation"
    elif text.isdigit() and len(text) == 15 and text.endswith("00"):
        shown = f"{int(text):.5E}".replace(".", ",")  # as French Excel shows it
        done = f"rounded it as a number (shown as {shown}); no NIR ends in 00"
    elif _DECIMAL.fullmatch(text):
        done = "turned it into a number with decimals"
    else:
        return None
    return (
        f"invalid NIR {text!r}: a spreadsheet {done}, and its last digits are lost: take the "
        f"NIR from the original file; {AVOID}"
    )


def day_with_time(raw: str, *, what: str) -> str | None:
    """A day given with a time of day, as a workbook gives a date-and-time cell (ISO 8601),
    where only the day is asked for."""
    text = raw.strip()
    if not _DAY_AND_TIME.fullmatch(text):
        return None
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        return None
    return (
        f"{what} {text!r} holds a time of day: the cell was a date and time; give the day "
        f"alone, {day.isoformat()} (a date format without the hours)"
    )


def date_damage(raw: str, *, what: str) -> str | None:
    """A date saved as the spreadsheet's serial number (days since 1899-12-30)."""
    text = raw.strip()
    if not _SERIAL.fullmatch(text):
        return None
    day = _EXCEL_DAY_ZERO + timedelta(days=int(float(text.replace(",", "."))))
    return (
        f"{what} {text!r} is a spreadsheet's serial number for a date ({day.isoformat()}?): the "
        f"column lost its date format; write it YYYY-MM-DD; {AVOID}"
    )


def formula_error(value: str) -> str | None:
    """A spreadsheet's error value where the formula that filled the cell failed (`#N/A`
    from a lookup that found nothing): no name or address holds one."""
    text = value.strip()
    if not _FORMULA_ERROR.fullmatch(text):
        return None
    return (
        f"{text!r} is a spreadsheet's error value (the formula that filled the cell failed): "
        "take the value from the original data"
    )


def lost_letter(value: str) -> str | None:
    """`?` or U+FFFD where a letter was: never part of a name or an address."""
    if "\ufffd" in value:
        return (
            f"{value!r} holds U+FFFD (�), the mark of a letter lost when the file was read "
            "with the wrong encoding: take the value from the original file, saved as CSV UTF-8"
        )
    if "?" in value:
        return (
            f"{value!r} holds a '?', which no name or address has: a spreadsheet saving as "
            'Windows-1252 ("CSV (séparateur: point-virgule)") writes one for each letter that '
            'code page lacks (ễ in Nguyễn, Ł in Łukasiewicz); save as "CSV UTF-8", or export with '
            "--excel or --format xlsx"
        )
    return None


def read_twice(value: str) -> str | None:
    """UTF-8 read as Windows-1252: the value encodes back to bytes that are UTF-8 of
    something else. No French name or address survives that test by chance (an accented
    letter alone is not UTF-8 once encoded), so a match is the damage."""
    if value.isascii():
        return None
    try:
        meant = value.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return None
    return (
        f"{value!r} looks like {meant!r} read with the wrong encoding (UTF-8 taken for "
        "Windows-1252): take the value from the original file; an import file saved as UTF-8 "
        "is read as such (or give --encoding utf-8)"
    )


def lost_zero(postcode: str, *, place: str | None) -> str:
    """A French postcode of 4 digits that is not a postcode with a zero put back."""
    padded = "0" + postcode
    where = f"a postcode of {place}" if place else "a French postcode"
    return (
        f"postcode {postcode!r} must be 5 digits: if a spreadsheet dropped its leading zero, "
        f"{padded} is not {where} either, so check it; {AVOID}"
    )
