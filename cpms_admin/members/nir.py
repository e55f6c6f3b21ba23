"""The NIR (French social security number): parse, show grouped, mask.

Beyond its 2-digit key, a NIR is refused when one of its parts cannot exist (INSEE's rules:
S AA MM DD CCC OOO KK, or S AA MM DDD CC OOO KK overseas), and the message names that part.
Every form INSEE gives out stays accepted: unknown birth months, births abroad (96, 99),
overseas, Corsica, temporary numbers.
"""

import re
import unicodedata
from collections.abc import Sequence
from datetime import date

from stdnum import exceptions as stdnum_errors
from stdnum.fr import nir as stdnum_nir

from cpms_admin.errors import FieldError
from cpms_admin.members import damage

_REASONS = {
    stdnum_errors.InvalidLength: "it must have 15 characters (13 digits and a 2-digit key)",
    stdnum_errors.InvalidFormat: "it must be 15 digits (2A/2B allowed for Corsica)",
    stdnum_errors.InvalidChecksum: "its 2-digit key does not match (check for a typo)",
}

# 1 and 2: men and women; 7 and 8: temporary numbers (NIA) given while someone born abroad is
# registered. 3 and 4 are the older digits of foreigners being registered: references on the
# NIR still list them and common NIR validators accept them, so a member may really hold one.
# 0, 5, 6 and 9 are given to no one.
_SEX_DIGITS = "123478"
# Outside 01-12, the month says it is unknown: 20-42, or 50-99 when INSEE registered someone
# whose papers lack it (often born abroad).
_MONTHS = frozenset(range(1, 13)) | frozenset(range(20, 43)) | frozenset(range(50, 100))
# Overseas, the department has 3 digits and the commune 2: 971-976 (the DOM), 977 and 978
# (Saint-Barthélemy and Saint-Martin, codes of their own since 2007) and 984-988 (the
# territories; 985 is Mayotte's former code).
_OVERSEAS = frozenset(str(code) for code in (*range(971, 979), *range(984, 989)))
_ABROAD = "99"  # then the 3 digits after it are the country's INSEE code
_CORSICA = ("20", "2A", "2B")
_CORSICA_SPLIT = 1976  # 20 before, 2A and 2B from 1 January 1976


def parse_nir(raw: str, *, today: date | None = None) -> str:
    """The 15 compact characters of a new member's NIR, or FieldError with the reason.

    Spaces, dots and dashes are accepted as separators; `2a`/`2b` are upper-cased. `today`
    (default: the system date) only decides whether a 2-digit birth year may be of the 2000s.
    """
    nir = nir_to_find(raw)
    wrong_part = _implausible_part(nir, today=today)
    if wrong_part is not None:
        raise FieldError("nir", f"invalid NIR {raw.strip()!r}: {wrong_part}")
    return nir


def nir_to_find(raw: str) -> str:
    """The compact NIR to look a member up by: the key is checked, the plausibility is not,
    so that a member stored before `parse_nir` checked it stays reachable (and the portal
    answers an impossible NIR like any unknown one)."""
    if not raw.isascii():  # fullwidth forms (an Asian input method) read as ASCII ones
        raw = unicodedata.normalize("NFKC", raw)
    compact = raw.replace("-", "").replace(".", "").replace(" ", "").strip().upper()
    # The common case (15 ASCII digits, the key right) answered here, as stdnum would: an
    # import checks a million of them. Anything else goes to stdnum, for its reason.
    if (
        len(compact) == 15
        and compact.isascii()
        and compact.isdigit()
        and 97 - int(compact[:13]) % 97 == int(compact[13:])
    ):
        return compact
    try:
        return str(stdnum_nir.validate(compact))
    except stdnum_errors.ValidationError as exc:
        if (digits := damage.intact_nir_number(raw)) is not None:
            return nir_to_find(digits)  # written as a number, every digit there
        said = damage.nir_damage(raw)  # what a spreadsheet did to it, if it did
        reason = _REASONS.get(type(exc), str(exc))
        raise FieldError("nir", said or f"invalid NIR {raw.strip()!r}: {reason}") from None


def _implausible_part(nir: str, *, today: date | None) -> str | None:
    """Why a NIR with a valid key cannot exist, naming the wrong part; None when it may."""
    sex, month = nir[0], int(nir[3:5])
    if sex not in _SEX_DIGITS:
        return f"the sex digit {sex} is not 1, 2, 3, 4, 7 or 8"
    if month not in _MONTHS:
        return f"the birth month {nir[3:5]} is not 01-12, nor 20-42 or 50-99 (unknown month)"
    overseas = nir[5:7] in ("97", "98")
    department = nir[5:8] if overseas else nir[5:7]
    commune, order = nir[len(department) + 5 : 10], nir[10:13]
    if department == "00" or (overseas and department not in _OVERSEAS):
        return f"the department {department} does not exist"
    if department in _CORSICA:  # only then the date: an import checks thousands of NIRs
        corsica = _corsica_mismatch(department, _birth_years(int(nir[1:3]), today=today))
        if corsica is not None:
            return corsica
    if not int(commune):
        if department == _ABROAD:
            return f"the country code {commune} does not exist (department 99: born abroad)"
        return f"the commune {commune} does not exist"
    if not int(order):
        return f"the order number {order} does not exist (it starts at 001)"
    return None


def birth_year_mismatch(nir: str, year: int) -> str | None:
    """Why the member whose NIR this is cannot be born in `year` (a birth date gives the
    century the NIR lacks: Corsica's department 20 before 1976, 2A and 2B since); None
    when they may."""
    department = nir[5:7]
    return _corsica_mismatch(department, [year]) if department in _CORSICA else None


def _birth_years(year: int, *, today: date | None) -> list[int]:
    """The NIR has no century: its 2-digit year may be 19AA or 20AA, but not in the future."""
    this_year = (today or date.today()).year
    return [year + century for century in (1900, 2000) if year + century <= this_year]


def _corsica_mismatch(department: str, years: list[int]) -> str | None:
    """Corsica's department is refused only when none of the birth `years` fits it, so 20
    stays accepted with year 10 (1910) and 2A with year 10 (2010)."""
    if department == "20" and min(years) >= _CORSICA_SPLIT:
        return (
            f"the department 20 (Corsica before {_CORSICA_SPLIT}) does not fit a birth in "
            f"{min(years)} (2A or 2B since {_CORSICA_SPLIT})"
        )
    if department in ("2A", "2B") and max(years) < _CORSICA_SPLIT:
        return (
            f"the department {department} (Corsica since {_CORSICA_SPLIT}) does not fit a birth "
            f"in {max(years)} (20 before {_CORSICA_SPLIT})"
        )
    return None


def format_nir(nir: str) -> str:
    """`185057800608491` -> `1 85 05 78 006 084 91`; what stands for a pseudonymised
    member's NIR (`X00000000000049`) is no NIR, and is shown as it is."""
    if not nir[:1].isdigit():
        return nir
    return str(stdnum_nir.format(nir))


# The groups format_nir prints (S AA MM DD CCC OOO KK): pasted unquoted, seven shell words.
_PRINTED_GROUPS = re.compile(r"\d \d\d \d\d (?:\d\d|2[AB]) \d\d\d \d\d\d \d\d", re.IGNORECASE)
PRINTED_GROUP_COUNT = 7


def is_printed_nir(words: Sequence[str]) -> bool:
    """Whether `words` are the groups of a NIR as the tables print it (`1 85 05 78 006 084
    91`), one word each."""
    return (
        len(words) == PRINTED_GROUP_COUNT and _PRINTED_GROUPS.fullmatch(" ".join(words)) is not None
    )


def mask_nir(nir: str) -> str:
    """Keep sex, birth year and key, hide the rest: `1 85 •• •• ••• ••• 91`."""
    return f"{nir[0]} {nir[1:3]} •• •• ••• ••• {nir[13:]}"
