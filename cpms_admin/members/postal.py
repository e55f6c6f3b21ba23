"""Postal addresses as printed on a letter, after AFNOR NF Z10-011.

At most 6 lines of at most 38 characters, in this order: recipient, complement,
number and street, `POSTCODE CITY`, country (abroad only). The last lines are printed
in capitals, the `POSTCODE CITY` line without accents.
"""

import re
import unicodedata
from dataclasses import dataclass

from cpms_admin.errors import FieldError

MAX_LINE = 38
MAX_LINES = 6
FRENCH_POSTCODE = re.compile(r"\d{5}")
FOREIGN_POSTCODE = re.compile(r"[A-Z0-9][A-Z0-9 -]{0,9}")
COUNTRY_NAMES = {
    "BE": "BELGIQUE",
    "CH": "SUISSE",
    "LU": "LUXEMBOURG",
    "MC": "MONACO",
    "DE": "ALLEMAGNE",
    "ES": "ESPAGNE",
    "IT": "ITALIE",
    "GB": "ROYAUME-UNI",
    "PT": "PORTUGAL",
}


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def fold(text: str) -> str:
    """Lower-case and accent-free: what member search compares."""
    return strip_accents(text).casefold()


FORMULA_STARTS = ("=", "+", "-", "@")


def clean_line(value: str) -> str:
    """Collapse runs of white space; refuse control characters (they break print and mail)
    and a leading `= + - @`, which a spreadsheet opening an export would run as a formula."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("control characters are not allowed")
    cleaned = " ".join(value.split())
    if cleaned.startswith(FORMULA_STARTS):
        raise ValueError(f"must not start with {cleaned[0]!r} (a spreadsheet would run it)")
    return cleaned


@dataclass(frozen=True)
class PostalAddress:
    street: str
    postcode: str
    city: str
    country: str = "FR"
    complement: str | None = None

    def lines(self) -> list[str]:
        """The address lines below the recipient's name, as printed."""
        lines = [self.complement] if self.complement else []
        lines.append(self.street.upper())
        lines.append(strip_accents(f"{self.postcode} {self.city}").upper())
        if self.country != "FR":
            lines.append(COUNTRY_NAMES.get(self.country, self.country))
        return lines


def recipient_line(civility: str | None, first_name: str, last_name: str) -> str:
    """Line 1; the first name shrinks to its initial when the full line would not fit."""
    prefix = f"{'Mme' if civility == 'MME' else civility} " if civility else ""
    full = f"{prefix}{first_name} {last_name.upper()}"
    if len(full) <= MAX_LINE:
        return full
    return f"{prefix}{first_name[:1]}. {last_name.upper()}"


def check_fits(field: str, line: str) -> None:
    if len(line) > MAX_LINE:
        raise FieldError(
            field,
            f"{field} does not fit on an envelope line: {len(line)} characters, "
            f"at most {MAX_LINE} ({line!r}); abbreviate it (e.g. BD, AV, RES, BAT)",
        )


def make_address(
    *, street: str, postcode: str, city: str, country: str = "FR", complement: str | None = None
) -> PostalAddress:
    """Validate and normalise an address; every line must fit, none is cut."""
    country = (country or "FR").strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise FieldError("country", f"country must be a 2-letter ISO code, got {country!r}")
    values = {}
    for field, value in (
        ("street", street),
        ("postcode", postcode),
        ("city", city),
        ("address_complement", complement or ""),
    ):
        try:
            values[field] = clean_line(value)
        except ValueError as exc:
            raise FieldError(field, f"{field}: {exc}") from None
    for field in ("street", "postcode", "city"):
        if not values[field]:
            raise FieldError(field, f"{field} is required")
    postcode_value = values["postcode"].upper()
    pattern = FRENCH_POSTCODE if country == "FR" else FOREIGN_POSTCODE
    if not pattern.fullmatch(postcode_value):
        expected = "5 digits" if country == "FR" else "up to 10 letters and digits"
        raise FieldError("postcode", f"postcode {postcode_value!r} must be {expected}")
    address = PostalAddress(
        street=values["street"],
        postcode=postcode_value,
        city=values["city"],
        country=country,
        complement=values["address_complement"] or None,
    )
    check_fits("street", values["street"])
    check_fits("address_complement", values["address_complement"])
    check_fits("city", address.lines()[-1 if country == "FR" else -2])
    return address
