"""Postal addresses as printed on a letter, after AFNOR NF Z10-011.

The norm's six lines, each at most 38 characters, each with a field of its own:

1. the recipient (derived from the member's name, see `recipient_line`);
2. `complement`: the delivery point inside a building (appartement, étage, chez...);
3. `building`: the building (bâtiment, résidence, immeuble...);
4. `street`: the number and street;
5. `locality`: a lieu-dit, a boîte postale;
6. the postcode and the city, as La Poste's delivery label (`places`);

then, for an address outside France, the country's name in French. Fields are stored as
typed (up to 100 characters); the printed lines are derived from them, in the norm's
typography and, where a line is too long, with its standard abbreviations (`afnor`).
Addresses abroad take their country's order of the last lines (`abroad`).
"""

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from cpms_admin.audit import unprintable
from cpms_admin.errors import FieldError, NotReady
from cpms_admin.members import abroad, afnor, damage, places
from cpms_admin.members.afnor import MAX_LINE, machine_line, upper_line
from cpms_admin.pepper import Peppers, tagged, untagged

if TYPE_CHECKING:
    from cpms_admin.models import Member

MAX_LINES = 7  # the six lines of the norm, and the country abroad
MAX_FIELD = 100
# La Poste's own network: French postcodes and delivery labels. No country line is printed
# for France and its overseas departments, mail to which is domestic.
FRENCH_POST = {"FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "MC", "WF", "PF", "NC"}
DOMESTIC = {"FR", "GP", "MQ", "GF", "RE", "YT"}
FORMULA_STARTS = ("=", "+", "-", "@")
# What a name or an address line may hold: the Latin alphabet with every accent, ligature and
# Vietnamese letter, digits, punctuation and currency signs. La Poste sorts mail in Latin
# letters (AFNOR XP Z10-011), and the letters' fonts print other scripts as empty boxes. The
# punctuation and currency blocks leave out their code points Unicode 14 does not assign.
# Within those blocks, what neither of the letters' fonts draws is left out too (it would
# print as an empty box): U+1EFC-1EFF (Middle Welsh) and six of the newest currency signs.
NOT_LATIN = re.compile(
    "[^\x00-\u024f\u0300-\u036f\u1e00-\u1efb\u2000-\u2064\u2066-\u2071\u2074-\u208e"
    "\u2090-\u209c\u20a0-\u20b5\u20b8-\u20ba\u20bd\u20bf\ufb00-\ufb06]"
)
CIVILITY_ON_ENVELOPE = {"M": "M", "MME": "Mme"}
_LINES_KEY_LABEL = b"cpms-address-v1"  # separates this key from the code and PIN keys
# Territories with French postcodes but a country code of their own, by postcode or prefix
# (Saint-Barthélemy and Saint-Martin have one postcode each, inside Guadeloupe's range).
_OWN_COUNTRY = {"97133": "BL", "97150": "MF", "980": "MC", "986": "WF", "987": "PF", "988": "NC"}


# The checks of one value are cached, bounded: names, towns and building lines repeat through
# an import file (a value refused raises, and is not cached).
@lru_cache(maxsize=1 << 15)
def clean_line(value: str) -> str:
    """Collapse runs of white space; refuse control characters (they break print and mail)
    and invisible formatting ones (they reorder or hide what is printed), a leading
    `= + - @`, which a spreadsheet opening an export would run as a formula, a spreadsheet's
    error value (`#N/A`), `?` or
    U+FFFD, which stand where a spreadsheet's encoding lost a letter, another script than
    the Latin alphabet (`NOT_LATIN`), and UTF-8 read as Windows-1252 (`Ã©` for `é`)."""
    if hidden := unprintable(value):
        raise ValueError(hidden)
    if spreadsheet_error := damage.formula_error(value):
        raise ValueError(spreadsheet_error)
    if "?" in value or "\ufffd" in value:
        raise ValueError(damage.lost_letter(value))
    if foreign := NOT_LATIN.search(value):
        character = foreign.group()
        named = f"U+{ord(character):04X}, {unicodedata.name(character, 'unnamed')}"
        if "LATIN" in named:  # a Latin letter all the same (Ꝃ, Ỿ), or a currency sign
            raise ValueError(
                f"the letters' font cannot print {character!r} ({named}): write it without"
            )
        raise ValueError(
            f"only Latin letters can be printed for La Poste: {character!r} ({named}) is not "
            "one; write it in Latin letters"
        )
    if twice := damage.read_twice(value):
        raise ValueError(twice)
    cleaned = " ".join(value.split())
    if cleaned.startswith(FORMULA_STARTS):
        raise ValueError(f"must not start with {cleaned[0]!r} (a spreadsheet would run it)")
    return cleaned


# The fields of lines 2 to 5, in print order, with the typography of their line.
_STREET_BLOCK = (
    ("address_complement", upper_line),
    ("address_building", upper_line),
    ("street", machine_line),
    ("locality", machine_line),
)


@dataclass(frozen=True)
class PostalAddress:
    street: str
    postcode: str
    city: str
    country: str = "FR"
    complement: str | None = None
    building: str | None = None
    locality: str | None = None

    def field_values(self) -> dict[str, str | None]:
        return {
            "address_complement": self.complement,
            "address_building": self.building,
            "street": self.street,
            "locality": self.locality,
        }

    @cached_property
    def shortened(self) -> dict[str, afnor.Shortened]:
        """Lines 2 to 5 as printed, by field, for the fields that are set."""
        values = self.field_values()
        return {
            field: afnor.shorten(value, typography)
            for field, typography in _STREET_BLOCK
            if (value := values[field])
        }

    def lines(self) -> list[str]:
        """The address lines below the recipient's name, as printed."""
        block = [shortened.line for shortened in self.shortened.values()]
        if self.country in FRENCH_POST:
            city_line = _city_line(self.postcode, self.city)
            lines = [*block, city_line]
            if self.country not in DOMESTIC and not city_line.endswith(self.country_line()):
                lines.append(self.country_line())
            return lines
        before, after = abroad.city_lines(self.country, self.postcode, self.city)
        return [*before, *block, *after, self.country_line()]

    def country_line(self) -> str:
        return machine_line(abroad.country_name(self.country))

    def notes(self) -> list[str]:
        """What was abbreviated to fit, for the agent who typed the address."""
        return [
            f"{field} printed as {s.line!r} ({s.describe()})"
            for field, s in self.shortened.items()
            if s.abbreviations
        ]


_COUNTRY = re.compile(r"[A-Z]{2}")


def make_address(
    *,
    street: str,
    postcode: str,
    city: str,
    country: str = "FR",
    complement: str | None = None,
    building: str | None = None,
    locality: str | None = None,
) -> PostalAddress:
    """Validate and normalise an address; every printed line must fit, none is cut.

    A French postcode and city must be a pair of La Poste's base. Abroad, the postcode must
    follow the country's pattern."""
    country = (country or "FR").strip().upper()
    if not _COUNTRY.fullmatch(country):
        hint = abroad.hint_for_named(country)
        raise FieldError("country", f"country must be a 2-letter ISO code, got {country!r}{hint}")
    street, postcode, city = (
        _clean("street", street),
        _clean("postcode", postcode),
        _clean("city", city),
    )
    # Most addresses have none of these: no value, nothing to check.
    complement = (complement and _clean("address_complement", complement)) or None
    building = (building and _clean("address_building", building)) or None
    locality = (locality and _clean("locality", locality)) or None
    for field, value in (("street", street), ("city", city)):
        if not value:
            raise FieldError(field, f"{field} is required")
    # The lines above the city line: none may hold a city line too (a whole address pasted).
    above = (
        ("street", street),
        ("address_complement", complement),
        ("address_building", building),
        ("locality", locality),
    )
    if country in FRENCH_POST:
        for field, line in above:
            _refuse_a_pasted_city_line(field, line)
        postcode = _french_place(country, postcode, city)
    else:
        abroad.check_known(country)
        postcode = abroad.normalise_postcode(country, postcode)
        abroad.check_region(country, city)
        for field, line in above:
            _refuse_the_city_line_again(field, line, postcode=postcode, city=city)
    address = PostalAddress(
        street=street,
        postcode=postcode,
        city=city,
        country=country,
        complement=complement,
        building=building,
        locality=locality,
    )
    _check_fits(address)
    return address


def _check_fits(address: PostalAddress) -> None:
    """Every line on an envelope line, abbreviated if need be, and all of them in the window
    with the recipient's: FieldError naming the field to shorten otherwise."""
    for field, shortened in address.shortened.items():
        if not shortened.fits:
            raise FieldError(
                field,
                f"{field} does not fit on an envelope line even abbreviated: "
                f"{shortened.line!r} is {len(shortened.line)} characters, at most {MAX_LINE}",
            )
    lines = address.lines()
    for line in lines:
        if len(line) > MAX_LINE:
            field = "country" if address.country != "FR" and line == lines[-1] else "city"
            raise FieldError(
                field,
                f"the {field} line {line!r} is {len(line)} characters, at most {MAX_LINE}",
            )
    if len(lines) + 1 > MAX_LINES:
        raise FieldError(
            "address_complement",
            f"the address takes {len(lines) + 1} lines with the recipient, at most {MAX_LINES}: "
            "put the complement and the building on one line",
        )


def _clean(field: str, value: str | None) -> str:
    try:
        cleaned = clean_line(value or "")
    except ValueError as exc:
        raise FieldError(field, f"{field}: {exc}") from None
    if len(cleaned) > MAX_FIELD:
        raise FieldError(field, f"{field} is {len(cleaned)} characters, at most {MAX_FIELD}")
    return cleaned


# `CEDEX 02` is no part of the town La Poste's base knows.
_ENDS_IN_A_CITY_LINE = re.compile(
    r"(?:(.*?)[\s,–-]+)?(\d{5})\s+(\D.*?)(?:\s+CEDEX(?:\s+\d{1,2})?)?", re.IGNORECASE
)


def _refuse_a_pasted_city_line(field: str, value: str | None) -> None:
    """A whole address pasted on one line (`12 rue de la Paix, 75002 Paris`): the envelope
    would bear two city lines, and La Poste sorts by the last. Refused when the line ends in
    a postcode and a town La Poste's base pairs, saying what to give instead."""
    found = _ENDS_IN_A_CITY_LINE.fullmatch(value or "")
    if found is None:
        return
    rest, postcode, town = found.groups()
    try:
        places.find_place(postcode, town)
    except FieldError:
        return  # not a postcode and its town: words that happen to follow a number
    city_line = f"give {postcode} and {town!r} as the postcode and city"
    if not rest:
        raise FieldError(field, f"{field} {value!r} is a postcode and town: {city_line}")
    raise FieldError(
        field,
        f"{field} {value!r} ends with a postcode and town: give {rest!r} as the {field}, "
        f"and {postcode} and {town!r} as the postcode and city",
    )


def _refuse_the_city_line_again(field: str, value: str | None, *, postcode: str, city: str) -> None:
    """Abroad, where no base pairs postcodes and towns: a line that holds the address's own
    postcode and city (`Rue de la Loi 16, 1000 Bruxelles`) is the whole address pasted on one
    line, which would put two city lines on the envelope, as in France."""
    if not (value and postcode):
        return
    words = f" {machine_line(value)} "
    if f" {machine_line(postcode)} " in words and f" {machine_line(city)} " in words:
        raise FieldError(
            field,
            f"{field} {value!r} holds the postcode and city ({postcode} {city}): give them "
            f"only as the postcode and city",
        )


@lru_cache(maxsize=1 << 14)
def _french_place(country: str, postcode: str, city: str) -> str:
    """The postcode, once La Poste's base says it serves `city` (a 4-digit one gets back the
    leading zero a spreadsheet ate, when the pair then matches)."""
    if not postcode:
        raise FieldError("postcode", "postcode is required")
    value = places.normalise_postcode(postcode)
    if not re.fullmatch(r"\d{5}", value):
        if re.fullmatch(r"\d{4}", value):
            raise FieldError("postcode", damage.lost_zero(value, place=None))
        raise FieldError("postcode", f"postcode {postcode!r} must be 5 digits")
    if country != "FR":
        abroad.normalise_postcode(country, value)  # the territory's own range (974xx...)
    territory = _OWN_COUNTRY.get(value) or _OWN_COUNTRY.get(value[:3])
    if country == "FR" and territory:
        where = abroad.country_name(territory)
        raise FieldError("postcode", f"{value} is in {where}: give the country {territory}")
    if country == "FR" or places.places_at(value):
        try:
            places.find_place(value, city)
        except FieldError:
            if value != postcode and len(postcode) == 4:  # the zero was not what went missing
                raise FieldError("postcode", damage.lost_zero(postcode, place=city)) from None
            raise
    return value


@lru_cache(maxsize=1 << 14)
def _city_line(postcode: str, city: str) -> str:
    """Line 6 in La Poste's network: the postcode and its delivery label for the city (the
    typed city in capitals for a territory the base does not cover)."""
    try:
        label = places.find_place(postcode, city).delivery_label
    except FieldError:
        label = city
    return machine_line(f"{postcode} {label}")


def recipient_line(
    civility: str | None, first_name: str, last_name: str, envelope_name: str | None = None
) -> str:
    """Line 1: the agent's envelope name when there is one, else the first of these that
    fits, in the norm's order: `Mme Jeanne DUPONT`, `Mme J. DUPONT`, `J. DUPONT` (initials
    as French writes them first: `Mme J.-P. DUPONT`). `M.` first on the line reads as
    "Monsieur": for anyone but a man, the name with only its title (`Mme DUPONT`, `DUPONT`
    without a civility) comes before such a line. Longer than the line when none fits (the
    name is then refused, quoting the shortest that does not read as "Monsieur")."""
    if envelope_name:
        return envelope_name
    title = CIVILITY_ON_ENVELOPE.get(civility or "")
    prefix = f"{title} " if title else ""
    last = last_name.upper()
    initial = f"{first_name[:1]}."
    candidates = [
        f"{prefix}{first_name} {last}",
        f"{prefix}{_initials(first_name)} {last}",
        f"{prefix}{initial} {last}",
        f"{initial} {last}",
    ]
    shortest = candidates[-1]
    if civility != "M" and initial == "M.":
        shortest = f"{prefix}{last}"
        monsieur = [line for line in candidates if line.startswith("M. ")]
        candidates = [line for line in candidates if line not in monsieur] + [shortest, *monsieur]
    return next((line for line in candidates if len(line) <= MAX_LINE), shortest)


def _initials(first_name: str) -> str:
    """`J.` for Jeanne, `J.-P.` for Jean-Pierre, `M. C.` for Marie Claire."""
    return " ".join(
        "-".join(f"{part[:1]}." for part in word.split("-") if part) for word in first_name.split()
    )


# PostalAddress's fields -> the member columns that hold them.
_COLUMNS = {
    "street": "street",
    "postcode": "postcode",
    "city": "city",
    "country": "country",
    "complement": "address_complement",
    "building": "address_building",
    "locality": "locality",
}


def address_from(values: Mapping[str, Any]) -> PostalAddress:
    """The address of a member's column values (a row being imported, say)."""
    return PostalAddress(**{name: values[column] for name, column in _COLUMNS.items()})


def postal_address(member: "Member") -> PostalAddress:
    return address_from({column: getattr(member, column) for column in _COLUMNS.values()})


def address_lines(member: "Member") -> list[str]:
    """The full AFNOR block as printed on an envelope, recipient first."""
    recipient = recipient_line(
        member.civility, member.first_name, member.last_name, member.envelope_name
    )
    return [recipient, *postal_address(member).lines()]


def delivery_lines(member: "Member") -> tuple[str, ...]:
    """The block below the name: where a letter to the member goes."""
    return tuple(postal_address(member).lines())


def same_destination(lines: Sequence[str], other: Sequence[str]) -> bool:
    """Whether a letter bearing `lines` and one bearing `other` go to the same door: the
    lines compared as the post sorts them (`afnor.sorting_form`), so that writing a word out
    or abbreviating it (`boulevard`, `bd`), its accents or its punctuation is no move. What
    decides that a member moved, and that a letter bore the member's address."""
    return tuple(lines) == tuple(other) or _destination(lines) == _destination(other)


def _destination(lines: Sequence[str]) -> tuple[str, ...]:
    return tuple(afnor.sorting_form(line) for line in lines)


def lines_digest(peppers: Peppers, lines: Sequence[str]) -> str:
    """What a printed letter keeps of the address lines it bore (`Letter.address_digest`): a nonce
    and a digest keyed with the pepper, "<nonce>$<hex>", tagged with the pepper's id after a
    rotation. It is made of the lines' destination (`same_destination`) and tells only
    whether an address is the same: an address is personal data."""
    nonce = secrets.token_hex(8)
    digest = _digest(peppers.current, nonce, _destination(lines))
    return tagged(peppers.current_id, "$", f"{nonce}${digest}")


def same_lines(stored: str, lines: Sequence[str], peppers: Peppers) -> bool | None:
    """Whether `lines` go where those `stored` (from `lines_digest`) was made of went; None
    when the pepper that made it is no longer at hand. A digest made before 3 December is
    of the lines as printed, not their destination, and of the same shape: the very same
    lines match it too (a destination digest they match is their own sorting form, which
    goes where they go)."""
    key_id, value = untagged(stored, "$")
    nonce, _, kept = value.partition("$")
    try:
        pepper = peppers.get(key_id)
    except NotReady:
        return None
    return any(
        hmac.compare_digest(_digest(pepper, nonce, form).encode(), kept.encode())
        for form in (_destination(lines), tuple(lines))
    )


def _digest(pepper: bytes, nonce: str, lines: Sequence[str]) -> str:
    key = hmac.new(pepper, _LINES_KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, "\n".join([nonce, *lines]).encode(), hashlib.sha256).hexdigest()
