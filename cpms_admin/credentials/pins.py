"""PINs: the format rule, the guessability rules, and hashing (argon2id over a peppered pre-hash).

The guessability rules refuse PINs made of the birth year and month that the NIR gives away
(`nir_date_pins`), even when no birth date is on file: whoever holds the NIR, the login, can
read them from it.

Hashing mixes in the pepper with HMAC before argon2, so a database dump without the
pepper cannot be brute-forced even though there are only a million 6-digit PINs.
"""

import base64
import calendar
import hashlib
import hmac
import itertools
import re
import secrets
from collections.abc import Collection
from functools import lru_cache
from typing import TYPE_CHECKING

from stdnum.exceptions import ValidationError
from stdnum.fr import nir as stdnum_nir

from cpms_admin.credentials.legacy import (
    LEGACY_PREFIX,
    import_legacy_hash,
    legacy_hash_problem,
    seal_legacy_hash,
    verify_legacy,
)
from cpms_admin.errors import InvalidInput
from cpms_admin.pepper import Peppers, as_peppers, tagged, untagged
from cpms_admin.vocabulary import PinWeakness

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from cpms_admin.settings import Settings

__all__ = [
    "COMMON_PINS",
    "LEGACY_PREFIX",
    "PinHasher",
    "check_pin_format",
    "configured_weakness",
    "import_legacy_hash",
    "is_legacy",
    "legacy_hash_problem",
    "nir_date_pins",
    "parse_weak_pins",
    "pin_weakness",
    "seal_legacy_hash",
]

# OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
MIN_MEMORY_KIB = 19456
MIN_TIME_COST = 2
SALT_LENGTH, HASH_LENGTH = 16, 32  # bytes

_PIN = re.compile(r"[0-9]{6}")  # ASCII only: full-width and other Unicode digits are refused


def _b64(raw: bytes) -> str:
    """Base64 as the PHC string format writes it: no padding."""
    return base64.b64encode(raw).decode().rstrip("=")


def check_pin_format(pin: str) -> None:
    """Raise InvalidInput unless `pin` is exactly 6 ASCII digits (the PIN is never echoed)."""
    if not _PIN.fullmatch(pin):
        raise InvalidInput("PIN must be exactly 6 digits (0-9)")


def is_legacy(stored: str | None) -> bool:
    """Whether a stored PIN hash is one an import carried over from the old system."""
    return stored is not None and stored.startswith(LEGACY_PREFIX)


# The PINs people choose most, refused whatever the settings add (CPMS_WEAK_PINS): a
# deployment naming a few more must not free these. The rules of pin_weakness catch most
# of them too. The ten six-digit PINs chosen most in Markert et al., "This PIN Can Be Easily
# Guessed" (IEEE S&P 2020), with 159753 and 789456, keypad lines the rules do not see; and
# the mirrored run, the doubled digits and the keypad's columns, as obvious to a guesser.
COMMON_PINS = frozenset(
    {"123456", "654321", "000000", "111111", "121212", "123123", "112233", "159753", "789456"}
    | {"123321", "111222", "147258", "147369", "258369"}
)


def parse_weak_pins(raw: str | None) -> frozenset[str]:
    """The `weak_pins` setting ("123456,121212,...") as a set, beside COMMON_PINS."""
    return COMMON_PINS | {item.strip() for item in (raw or "").split(",") if item.strip()}


def _is_run(pin: str) -> bool:
    """Each digit follows the previous one up or down by one, wrapping 9->0 (890123, 109876):
    on a keypad these are typed as straight runs too."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return steps in ({1}, {9})


def _counts_in_pairs(pin: str) -> bool:
    """010203, 121110: three 2-digit numbers, each one more (or less) than the one before."""
    pairs = [int(pin[i : i + 2]) for i in range(0, len(pin), 2)]
    steps = {b - a for a, b in itertools.pairwise(pairs)}
    return steps in ({1}, {-1})


# The keypad's straight lines of three (rows, columns, diagonals), both ways: 159357, 963852,
# 147852 and 654987 are two of them typed one after the other.
_KEYPAD_LINES = frozenset(
    line
    for forward in ("123", "456", "789", "147", "258", "369", "159", "357")
    for line in (forward, forward[::-1])
)


def _nir_year_month(nir: str) -> tuple[str, int | None] | None:
    """The birth year's last two digits and the month (None: unknown) read from the NIR, or
    None when it is malformed."""
    try:
        compact = str(stdnum_nir.compact(nir))  # also turns full-width digits into ASCII ones
    except ValidationError:
        return None
    year, month = compact[1:3], compact[3:5]
    if len(compact) != 15 or not (year + month).isascii() or not (year + month).isdigit():
        return None
    number = int(month)
    # Outside 01-12 the NIR does not give the month (20-42 and 50-99 by INSEE's rules; any
    # other value is taken the same way): every month of that year is then guessable.
    return year, number if 1 <= number <= 12 else None


@lru_cache(maxsize=256)
def _year_month_pins(year: str, month: int | None) -> frozenset[str]:
    """Cached on the year and month, not the NIR: at most 1,300 keys, shared by everyone
    born the same month, and no NIR is kept in memory."""
    months = range(1, 13) if month is None else (month,)
    centuries = ("19", "20")
    pins: set[str] = set()
    for mm in months:
        # The century is unknown, so a day is valid if it is in either (Feb 29 of 00: 2000).
        last_day = max(calendar.monthrange(int(c + year), mm)[1] for c in centuries)
        for dd in range(1, last_day + 1):
            pins.update(
                (f"{dd:02d}{mm:02d}{year}", f"{year}{mm:02d}{dd:02d}", f"{mm:02d}{dd:02d}{year}")
            )
        for century in centuries:
            pins.update((f"{mm:02d}{century}{year}", f"{century}{year}{mm:02d}"))
    return frozenset(pins)


def nir_date_pins(nir: str) -> frozenset[str]:
    """The PINs built from the birth year and month in `nir` (every month when the NIR says it
    is unknown): DDMMYY, YYMMDD and MMDDYY for each day of the month, MMYYYY and YYYYMM for
    19YY and 20YY. Empty for a malformed NIR, rather than failing a PIN change over it."""
    year_month = _nir_year_month(nir)
    return frozenset() if year_month is None else _year_month_pins(*year_month)


def pin_weakness(
    pin: str, *, weak_pins: Collection[str], nir: str | None = None
) -> PinWeakness | None:
    """Why `pin` is too easy to guess, or None when it is acceptable. Assumes a well-formed PIN.

    `nir` is the member's: the NIR is the login, so dates read from it are as good as known.
    (A birth date on file must match the NIR's year and month, so its PINs are among these.)
    """
    if len(set(pin)) == 1:
        return PinWeakness.repeated_digit
    if _is_run(pin):
        return PinWeakness.consecutive
    if pin in (pin[:2] * 3, pin[:3] * 2):
        return PinWeakness.repeated_group
    if pin in weak_pins:
        return PinWeakness.common
    if max(pin.count(digit) for digit in pin) >= len(pin) - 1:
        return PinWeakness.nearly_one_digit
    if pin[0::2] == pin[1::2]:
        return PinWeakness.doubled_digits
    if _counts_in_pairs(pin):
        return PinWeakness.counting_pairs
    if pin[:3] in _KEYPAD_LINES and pin[3:] in _KEYPAD_LINES:
        return PinWeakness.keypad_lines
    if nir is not None and pin in nir_date_pins(nir):
        return PinWeakness.birth_date
    return None


def configured_weakness(pin: str, *, settings: "Settings", nir: str) -> PinWeakness | None:
    """`pin_weakness` with the common PINs and those the settings add (CPMS_WEAK_PINS)."""
    return pin_weakness(pin, weak_pins=parse_weak_pins(settings.weak_pins), nir=nir)


class PinHasher:
    """Hash and verify PINs with the pepper and the configured argon2id cost."""

    def __init__(
        self,
        *,
        pepper: bytes | Peppers,
        memory_kib: int = MIN_MEMORY_KIB,
        time_cost: int = MIN_TIME_COST,
        parallelism: int = 1,
    ) -> None:
        peppers = as_peppers(pepper)
        if not all(peppers.secrets.values()):
            raise ValueError("the pepper must not be empty")
        if memory_kib < MIN_MEMORY_KIB or time_cost < MIN_TIME_COST or parallelism < 1:
            raise ValueError(
                f"argon2id parameters below the OWASP minimum "
                f"(memory {MIN_MEMORY_KIB} KiB, time cost {MIN_TIME_COST}, parallelism 1)"
            )
        self._peppers = peppers
        self._params = (memory_kib, time_cost, parallelism)
        self._argon2: PasswordHasher | None = None
        self._dummy: str | None = None

    def __repr__(self) -> str:
        memory_kib, time_cost, parallelism = self._params
        return (
            f"PinHasher(memory_kib={memory_kib}, time_cost={time_cost}, parallelism={parallelism})"
        )

    def _hasher(self) -> "PasswordHasher":
        if self._argon2 is None:
            from argon2 import PasswordHasher, Type

            memory_kib, time_cost, parallelism = self._params
            self._argon2 = PasswordHasher(
                time_cost=time_cost,
                memory_cost=memory_kib,
                parallelism=parallelism,
                hash_len=HASH_LENGTH,
                salt_len=SALT_LENGTH,
                type=Type.ID,
            )
        return self._argon2

    def _prehash(self, pin: str, key_id: int) -> str:
        pepper = self._peppers.get(key_id)
        return hmac.new(pepper, pin.encode("utf-8"), hashlib.sha256).hexdigest()

    def _verify_argon2(self, stored: str, pin: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError

        key_id, phc = untagged(stored, ":")
        try:
            return self._hasher().verify(phc, self._prehash(pin, key_id))
        except (VerificationError, InvalidHashError):
            return False

    def hash(self, pin: str) -> str:
        """An argon2id PHC string for `pin` (InvalidInput if it is not 6 digits), tagged with
        the current pepper's id after a rotation ("k2:$argon2id$...")."""
        check_pin_format(pin)
        key_id = self._peppers.current_id
        return tagged(key_id, ":", self._hasher().hash(self._prehash(pin, key_id)))

    def verify(self, stored: str | None, pin: str) -> bool:
        """Does `pin` match `stored`? With no stored hash, spend the same time and say no,
        so the portal's response time does not reveal whether the member has a PIN."""
        if stored is None:
            self._verify_argon2(self._dummy_hash(), pin)
            return False
        if is_legacy(stored):
            return verify_legacy(stored[len(LEGACY_PREFIX) :], pin, self._peppers)
        return self._verify_argon2(stored, pin)

    def _dummy_hash(self) -> str:
        """A hash at this hasher's cost that no PIN matches: a random salt and digest, made
        without argon2's work, so that checking it costs one argon2 run, as a real hash does,
        from the very first check (a hash made with `hash` would cost the first one twice)."""
        if self._dummy is None:
            memory_kib, time_cost, parallelism = self._params
            salt, digest = (_b64(secrets.token_bytes(size)) for size in (SALT_LENGTH, HASH_LENGTH))
            phc = f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}${salt}${digest}"
            self._dummy = tagged(self._peppers.current_id, ":", phc)
        return self._dummy

    def needs_rehash(self, stored: str) -> bool:
        """True for legacy or unreadable hashes, and argon2 hashes made with an older pepper or
        other parameters: the caller rehashes after a successful login, the only time it has
        the PIN."""
        if is_legacy(stored):
            return True
        from argon2.exceptions import InvalidHashError

        key_id, phc = untagged(stored, ":")
        if key_id != self._peppers.current_id:
            return True
        try:
            return self._hasher().check_needs_rehash(phc)
        except InvalidHashError:
            return True
