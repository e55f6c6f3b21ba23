"""Validation of a member's fields: the one code path for `member add/update` and imports."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from cpms_admin.errors import FieldError
from cpms_admin.members import damage
from cpms_admin.members.afnor import MAX_LINE
from cpms_admin.members.nir import birth_year_mismatch, parse_nir
from cpms_admin.members.postal import (
    FORMULA_STARTS,
    PostalAddress,
    clean_line,
    make_address,
    recipient_line,
)

# Conservative: one @, a dotted domain, no white space or control characters anywhere.
# RFC 5321's mailbox as mail servers take it: a local part of at most 64 characters, dots
# only between its words (`a..b@` and `.a@` are refused by servers, and would lose the code).
_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL = re.compile(
    rf"(?=[^@]{{1,64}}@){_WORD}(?:\.{_WORD})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
CIVILITIES = {
    "M": "M",
    "M.": "M",
    "MR": "M",
    "MONSIEUR": "M",
    "MME": "MME",
    "MADAME": "MME",
    "MLLE": "MME",
    "MADEMOISELLE": "MME",
}
# Accepted, and recorded as another civility: the agent is told (`civility_note`).
RECORDED_AS = {"MLLE", "MADEMOISELLE"}
COLUMNS = (
    "nir",
    "civility",
    "last_name",
    "first_name",
    "birth_date",
    "email",
    "street",
    "address_complement",
    "postcode",
    "city",
    "country",
    "address_building",
    "locality",
    "envelope_name",
)
REQUIRED = ("nir", "last_name", "first_name", "street", "postcode", "city")


@dataclass(frozen=True)
class MemberFields:
    nir: str
    last_name: str
    first_name: str
    address: PostalAddress
    civility: str | None = None
    birth_date: date | None = None
    email: str | None = None
    envelope_name: str | None = None
    civility_typed: str | None = None  # only when recorded as another civility (Mlle)

    def notes(self) -> list[str]:
        """What was recorded otherwise than typed (a civility, the envelope's abbreviations),
        for the agent who typed the fields."""
        civility = civility_note(self.civility_typed) if self.civility_typed else None
        return [*([civility] if civility else []), *self.address.notes()]

    def column_values(self) -> tuple[object, ...]:
        """Values for the `member` table, in COLUMNS order."""
        address = self.address
        return (
            self.nir,
            self.civility,
            self.last_name,
            self.first_name,
            self.birth_date,
            self.email,
            address.street,
            address.complement,
            address.postcode,
            address.city,
            address.country,
            address.building,
            address.locality,
            self.envelope_name,
        )

    def as_row(self) -> dict[str, object]:
        """Column values for the `member` table, by name."""
        return dict(zip(COLUMNS, self.column_values(), strict=True))


_NAMED = re.compile(r"[^<>]*<([^<>\s]+@[^<>\s]+)>\s*")  # `Jean Dupont <jean@x.fr>`


def _suggestion(value: str) -> str:
    """What to give instead, for an address pasted with its name or a trailing separator."""
    named = _NAMED.fullmatch(value)
    bare = named.group(1) if named else value.strip("<>,; ").removeprefix("mailto:")
    if bare != value and EMAIL.fullmatch(bare):
        return f": give the address alone, {bare}"
    return ""


def parse_email(raw: str) -> str:
    if "\r" in raw or "\n" in raw:
        raise FieldError("email", "e-mail must not contain a line break")
    value = raw.strip()
    if value.startswith(FORMULA_STARTS):  # as names and addresses (postal.clean_line)
        raise FieldError(
            "email",
            f"e-mail {value!r} must not start with {value[0]!r} (a spreadsheet would run it)",
        )
    if len(value) > 254 or not EMAIL.fullmatch(value):
        raise FieldError("email", f"invalid e-mail address {value!r}{_suggestion(value)}")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def same_mailbox(one: str | None, other: str | None) -> bool:
    """Whether two addresses (or none) reach the same mailbox: the domain is stored in lower
    case, and mail servers do not tell a local part's case either."""
    return (one or "").casefold() == (other or "").casefold()


def civility_note(raw: str) -> str | None:
    """What to tell the agent who typed `raw`, when it is recorded as another civility."""
    typed = raw.strip()
    if typed.upper() not in RECORDED_AS:
        return None
    return (
        f"civility {typed!r} recorded as MME: letters say 'Madame' ('Mademoiselle' is no "
        "longer used in official correspondence)"
    )


def parse_civility(raw: str) -> str:
    """`M`, `Mme`, as written out, with or without the abbreviations' dot (`Mme.`, `Mr.`)."""
    typed = raw.strip().upper()
    value = CIVILITIES.get(typed) or CIVILITIES.get(typed.removesuffix("."))
    if value is None:
        raise FieldError("civility", f"civility must be M or MME, got {raw.strip()!r}")
    return value


MAX_NAME = 100  # characters of a name, kept whole (the envelope shortens what it prints)
# What no name holds, and a phone number, an e-mail or a web address typed or pasted into a
# name's field does (`Martin 06 12 34 56 78`, `https://...`): it would be printed on letters.
# Not `/`: Malaysian names hold it (`Muthu a/l Ramasamy`), and older systems join names so.
_NOT_IN_A_NAME = frozenset("@:")


@lru_cache(maxsize=1 << 15)  # names repeat through an import file (a name refused raises)
def parse_name(field: str, raw: str) -> str:
    try:
        value = clean_line(raw)
    except ValueError as exc:
        raise FieldError(field, f"{field}: {exc}") from None
    if not value:
        raise FieldError(field, f"{field} is required")
    if len(value) > MAX_NAME:
        raise FieldError(
            field, f"{field} is {len(value)} characters long, at most {MAX_NAME}: {value[:30]!r}..."
        )
    if not any(ch.isalpha() for ch in value):
        raise FieldError(field, f"{field} {value!r} is not a name")
    stray = next((ch for ch in value if ch.isnumeric() or ch in _NOT_IN_A_NAME), None)
    if stray is not None:
        raise FieldError(field, f"{field} {value!r} is not a name: no name holds {stray!r}")
    return value


def parse_envelope_name(raw: str) -> str:
    """The recipient line an agent chose, for a name that does not fit shortened."""
    try:
        value = clean_line(raw)
    except ValueError as exc:
        raise FieldError("envelope_name", f"envelope_name: {exc}") from None
    if len(value) > MAX_LINE:
        raise FieldError(
            "envelope_name",
            f"envelope name {value!r} is {len(value)} characters, at most {MAX_LINE}",
        )
    return value


# The two forms the refusal names, in ASCII digits: `date.fromisoformat` alone also took week
# dates (`1965-W10-5`), `19650312` and other scripts' digits.
_FRENCH_DATE = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_birth_date(raw: str, nir: str) -> date:
    value = raw.strip()
    try:
        if _FRENCH_DATE.fullmatch(value):  # French office files: DD/MM/YYYY
            day, month, year = value.split("/")
            born = date(int(year), int(month), int(day))
        elif _ISO_DATE.fullmatch(value):
            born = date.fromisoformat(value)
        else:
            raise ValueError(value)
    except ValueError:
        reason = damage.day_with_time(value, what="birth date") or damage.date_damage(
            value, what="birth date"
        )
        raise FieldError(
            "birth_date",
            reason or f"birth date {value!r} is not a date: write YYYY-MM-DD (or DD/MM/YYYY)",
        ) from None
    nir_month = int(nir[3:5])
    if born.year % 100 != int(nir[1:3]) or (1 <= nir_month <= 12 and born.month != nir_month):
        raise FieldError("birth_date", f"birth date {value} does not match the NIR's year/month")
    if (mismatch := birth_year_mismatch(nir, born.year)) is not None:
        raise FieldError("birth_date", f"birth date {value} does not fit the NIR: {mismatch}")
    if born > date.today():
        raise FieldError("birth_date", f"birth date {value} is in the future")
    return born


def validate_member_fields(raw: Mapping[str, str | None]) -> MemberFields:
    """Check and normalise one member's fields (strings, as typed or read from a file)."""
    values = {key: (raw.get(key) or "").strip() for key in COLUMNS}
    for key in REQUIRED:
        if not values[key] and key != "postcode":  # some countries have none: see postal
            raise FieldError(key, f"{key} is required")
    nir = parse_nir(values["nir"])
    civility = parse_civility(values["civility"]) if values["civility"] else None
    last_name = parse_name("last_name", values["last_name"])
    first_name = parse_name("first_name", values["first_name"])
    envelope_name = parse_envelope_name(values["envelope_name"]) or None
    name_line = recipient_line(civility, first_name, last_name, envelope_name)
    if len(name_line) > MAX_LINE:
        raise FieldError(
            "last_name",
            f"the name does not fit on an envelope line even shortened: {name_line!r} is "
            f"{len(name_line)} characters, at most {MAX_LINE}; give the line to print with "
            "--envelope-name (the name itself is kept whole)",
        )
    address = make_address(
        street=values["street"],
        postcode=values["postcode"],
        city=values["city"],
        country=values["country"] or "FR",
        complement=values["address_complement"] or None,
        building=values["address_building"] or None,
        locality=values["locality"] or None,
    )
    return MemberFields(
        nir=nir,
        civility=civility,
        last_name=last_name,
        first_name=first_name,
        address=address,
        birth_date=parse_birth_date(values["birth_date"], nir) if values["birth_date"] else None,
        email=parse_email(values["email"]) if values["email"] else None,
        envelope_name=envelope_name,
        civility_typed=values["civility"] if civility_note(values["civility"]) else None,
    )
