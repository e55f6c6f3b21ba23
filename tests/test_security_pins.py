"""PIN rules and hashing: format, guessability, argon2id with the pepper, legacy hashes."""

import base64
import hashlib
import random
import time
from collections.abc import Callable

import bcrypt
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from stdnum.fr import nir as stdnum_nir

from cpms_admin.credentials.pins import (
    COMMON_PINS,
    LEGACY_PREFIX,
    PinHasher,
    check_pin_format,
    configured_weakness,
    import_legacy_hash,
    legacy_hash_problem,
    nir_date_pins,
    parse_weak_pins,
    pin_weakness,
)
from cpms_admin.errors import InvalidInput, NotReady
from cpms_admin.pepper import Peppers
from cpms_admin.settings import Settings
from tests.factories import make_nir

PIN = "482913"
WRONG = "482914"
PEPPER = b"test-pepper-0123456789abcdef"
PEPPERS = Peppers({1: PEPPER}, "test")
DEFAULT_WEAK = parse_weak_pins(Settings().weak_pins)  # COMMON_PINS


@pytest.fixture(scope="module")
def hasher() -> PinHasher:
    return PinHasher(pepper=PEPPER)


@pytest.fixture(scope="module")
def stored(hasher: PinHasher) -> str:
    return hasher.hash(PIN)


# --- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pin",
    ["12345", "1234567", "", "12a456", "12 456", " 123456", "123456\n", "０１２３４５", "١٢٣٤٥٦"],
)
def test_pin_format_refuses_anything_but_six_ascii_digits(pin: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_pin_format(pin)
    assert str(exc.value) == "PIN must be exactly 6 digits (0-9)"
    assert exc.value.exit_code == 2


def test_a_pin_with_a_leading_zero_is_accepted_and_only_it_verifies(hasher: PinHasher) -> None:
    """A PIN starting with 0 is a PIN like any other: the format and the guessability checks
    let it through, it is hashed, and only the very same six digits verify (not the number
    without its zero, nor the digits shifted)."""
    pin = "048291"
    assert check_pin_format(pin) is None  # returns, raising nothing
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=NIR_MAY_1985) is None
    stored = hasher.hash(pin)
    assert hasher.verify(stored, pin) is True
    for other in ("48291", "482910", "048290"):
        assert hasher.verify(stored, other) is False, other


NIR_REASON = "the PIN is made of the birth year and month in the NIR"
NIR_MAY_1985 = "185057800608491"  # born May 1985


def _nir(year: int, month: int) -> str:
    """A NIR with a valid key for this 2-digit year and month value."""
    body = f"1{year:02d}{month:02d}75006084"
    return body + stdnum_nir.calc_check_digits(body)


# --- guessability ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("777777", "the PIN is one digit repeated"),
        ("123456", "the PIN is a run of consecutive digits"),
        ("987654", "the PIN is a run of consecutive digits"),
        ("890123", "the PIN is a run of consecutive digits"),
        ("109876", "the PIN is a run of consecutive digits"),
        ("474747", "the PIN repeats a group of 2 or 3 digits"),
        ("583583", "the PIN repeats a group of 2 or 3 digits"),
        ("112233", "the PIN is on the list of common PINs"),
        ("159753", "the PIN is on the list of common PINs"),  # keypad lines (IEEE S&P 2020)
        ("789456", "the PIN is on the list of common PINs"),
        ("123321", "the PIN is on the list of common PINs"),  # a run, mirrored
        ("111222", "the PIN is on the list of common PINs"),
        ("147258", "the PIN is on the list of common PINs"),  # the keypad's columns
        # The shapes of the common ones (a tester's list: each was accepted).
        ("000001", "the PIN is one digit repeated but for one"),
        ("999998", "the PIN is one digit repeated but for one"),
        ("223344", "the PIN is three doubled digits"),
        ("010203", "the PIN counts in pairs of digits (01 02 03)"),
        ("121110", "the PIN counts in pairs of digits (01 02 03)"),
        ("159357", "the PIN follows two lines of the keypad"),
        ("963852", "the PIN follows two lines of the keypad"),
        ("147852", "the PIN follows two lines of the keypad"),
        ("654987", "the PIN follows two lines of the keypad"),
        ("789123", "the PIN follows two lines of the keypad"),
        ("140385", NIR_REASON),
        ("850314", NIR_REASON),
        ("031485", NIR_REASON),
    ],
)
def test_guessable_pins_are_refused_with_a_reason(pin: str, reason: str) -> None:
    found = pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=_nir(85, 3))
    assert found == reason
    assert pin not in found


def test_weak_pin_list_is_configurable_and_keeps_the_common_ones() -> None:
    """CPMS_WEAK_PINS adds to the common PINs: naming a few more freed 112233."""
    assert pin_weakness("246813", weak_pins=DEFAULT_WEAK) is None
    weak = parse_weak_pins(" 246813, 121212,,")
    assert weak == {"246813", "121212"} | COMMON_PINS
    for pin in ("246813", "112233"):
        found = configured_weakness(pin, settings=Settings(weak_pins="246813"), nir=make_nir())
        assert found is not None, pin


@pytest.mark.parametrize("pin", [PIN, "150385", "123465", "000012", "246813"])
def test_strong_pins_are_accepted(pin: str) -> None:
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=_nir(86, 3)) is None


def test_test_nirs_have_valid_keys() -> None:
    assert stdnum_nir.is_valid(NIR_MAY_1985)
    assert make_nir(6084, year=85, month=5, department="78") == NIR_MAY_1985
    for nir in (_nir(85, 99), _nir(85, 30), _nir(0, 2)):
        assert stdnum_nir.is_valid(nir), nir


@pytest.mark.parametrize("pin", ["140585", "850514", "051485", "051985", "198505", "052085"])
def test_pins_from_the_nir_birth_month_are_refused_without_a_birth_date(pin: str) -> None:
    found = pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=NIR_MAY_1985)
    assert found == NIR_REASON
    assert pin not in found
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK) is None  # nir is opt-in


@pytest.mark.parametrize("pin", ["140685", "850614", "061485", "061985", "140584", "140586"])
def test_pins_from_another_month_or_year_are_accepted(pin: str) -> None:
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=NIR_MAY_1985) is None


@pytest.mark.parametrize("month", [99, 50, 42, 30, 20])
@pytest.mark.parametrize("pin", ["140585", "140685", "061285", "311285", "121985", "198512"])
def test_unknown_month_in_the_nir_refuses_every_month(month: int, pin: str) -> None:
    nir = _nir(85, month)
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=nir) == NIR_REASON


@pytest.mark.parametrize("pin", ["290200", "000229", "022900"])
def test_feb_29_of_a_leap_year_is_refused(pin: str) -> None:
    assert pin_weakness(pin, weak_pins=DEFAULT_WEAK, nir=_nir(0, 2)) == NIR_REASON


def test_only_real_days_are_refused() -> None:
    assert "290285" not in nir_date_pins(_nir(85, 2))  # neither 1985 nor 2085 is a leap year
    assert "280285" in nir_date_pins(_nir(85, 2))
    assert "310485" not in nir_date_pins(_nir(85, 4))
    assert "310585" in nir_date_pins(NIR_MAY_1985)


@pytest.mark.parametrize(
    "written", ["1 85 05 78 006 084 91", "1.85.05.78.006.084.91", "1８５０５7800608491"]
)
def test_nir_is_read_in_stdnum_compact_form(written: str) -> None:
    assert nir_date_pins(written) == nir_date_pins(NIR_MAY_1985)


@pytest.mark.parametrize(
    "nir",
    ["", "not a nir", "18505", "1850578006084", "1AB057800608491", "1850578006084910"],
)
def test_malformed_nir_gives_no_date_and_does_not_crash(nir: str) -> None:
    assert nir_date_pins(nir) == frozenset()
    assert pin_weakness("140585", weak_pins=DEFAULT_WEAK, nir=nir) is None


@pytest.mark.parametrize("month", [0, 13, 19, 43, 49])
def test_undefined_month_values_count_as_an_unknown_month(month: int) -> None:
    """Such NIRs accept any birth month on file: every month of the year is guessable."""
    assert nir_date_pins(_nir(85, month)) == nir_date_pins(_nir(85, 99))
    assert "140585" in nir_date_pins(_nir(85, month))


def test_nir_check_comes_after_the_weak_list() -> None:
    nir = _nir(33, 11)
    assert "112233" in nir_date_pins(nir)  # MMDDYY for 22 November (19)33
    assert pin_weakness("112233", weak_pins=DEFAULT_WEAK, nir=nir) == (
        "the PIN is on the list of common PINs"
    )


def test_nir_date_pins_are_few_and_leave_most_pins_acceptable() -> None:
    known = nir_date_pins(NIR_MAY_1985)
    unknown = nir_date_pins(_nir(85, 99))
    assert 90 <= len(known) <= 200
    assert 900 <= len(unknown) <= 1500  # DDMM and MMDD coincide for days 1-12
    assert known < unknown
    assert all(len(pin) == 6 and pin.isascii() and pin.isdigit() for pin in unknown)
    rng = random.Random(20240514)
    sample = [f"{rng.randrange(1_000_000):06d}" for _ in range(1000)]
    for nir in (NIR_MAY_1985, _nir(85, 99)):
        reasons = [pin_weakness(p, weak_pins=DEFAULT_WEAK, nir=nir) for p in sample]
        assert reasons.count(NIR_REASON) <= 10
        assert reasons.count(None) >= 950


def test_nir_date_pins_are_cached_per_birth_month() -> None:
    assert nir_date_pins(NIR_MAY_1985) is nir_date_pins(make_nir(1, year=85, month=5))
    assert nir_date_pins(_nir(85, 99)) is nir_date_pins(_nir(85, 30))


# --- hashing ----------------------------------------------------------------------------------


def test_hash_is_argon2id_at_owasp_cost_without_the_pin(stored: str) -> None:
    params = extract_parameters(stored)
    assert stored.startswith("$argon2id$v=19$")
    assert params.type is Type.ID
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism == 1
    assert PIN not in stored


def test_verify_accepts_the_right_pin_only(hasher: PinHasher, stored: str) -> None:
    assert hasher.verify(stored, PIN) is True
    assert hasher.verify(stored, WRONG) is False
    assert hasher.verify("$argon2id$garbage", PIN) is False


def test_same_pin_hashes_differently_each_time(hasher: PinHasher, stored: str) -> None:
    assert hasher.hash(PIN) != stored


def test_another_pepper_does_not_verify(stored: str) -> None:
    assert PinHasher(pepper=b"another-pepper").verify(stored, PIN) is False


def test_hash_refuses_a_malformed_pin(hasher: PinHasher) -> None:
    with pytest.raises(InvalidInput):
        hasher.hash("12345")


@pytest.mark.parametrize(
    "params",
    [{"memory_kib": 19455}, {"time_cost": 1}, {"parallelism": 0}, {"pepper": b""}],
)
def test_hasher_refuses_weak_parameters(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PinHasher(**{"pepper": PEPPER, **params})  # type: ignore[arg-type]


def test_needs_rehash_when_the_cost_rises(hasher: PinHasher, stored: str) -> None:
    assert hasher.needs_rehash(stored) is False
    stronger = PinHasher(pepper=PEPPER, memory_kib=2 * 19456, time_cost=3)
    assert stronger.needs_rehash(stored) is True
    assert stronger.verify(stored, PIN) is True  # old hashes still work until rehashed
    assert hasher.needs_rehash("not a hash") is True


def test_each_hash_names_its_pepper_and_an_old_one_is_rehashed(stored: str) -> None:
    """After a rotation: new hashes carry the new pepper's id, old ones still verify with
    theirs and ask to be rehashed, and one whose pepper is gone is NotReady, not wrong."""
    rotated = Peppers({1: PEPPER, 2: b"the-second-pepper"}, "pepper file p")
    hasher = PinHasher(pepper=rotated, time_cost=3)
    fresh = hasher.hash(PIN)
    assert fresh.startswith("k2:$argon2id$") and extract_parameters(fresh[3:]).time_cost == 3
    assert hasher.verify(stored, PIN) and hasher.verify(fresh, PIN)
    assert not hasher.verify(fresh, WRONG)
    assert hasher.needs_rehash(stored) and not hasher.needs_rehash(fresh)
    assert PinHasher(pepper=PEPPER).verify(stored, PIN)  # pepper 1 hashes carry no tag
    with pytest.raises(NotReady, match="pepper 2, which pepper file q no longer holds"):
        PinHasher(pepper=Peppers({1: PEPPER}, "pepper file q")).verify(fresh, PIN)


def test_repr_hides_the_pepper(hasher: PinHasher) -> None:
    assert PEPPER.decode() not in repr(hasher)
    assert "19456" in repr(hasher)


def _best_of(runs: int, action: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def test_verify_without_hash_says_no_and_takes_as_long(hasher: PinHasher, stored: str) -> None:
    """From a hasher's very first check on: a command checks one PIN in its process."""
    real = _best_of(5, lambda: hasher.verify(stored, WRONG))
    firsts = []
    for _ in range(5):
        fresh = PinHasher(pepper=PEPPER)
        start = time.perf_counter()
        assert fresh.verify(None, PIN) is False
        firsts.append(time.perf_counter() - start)
    missing = _best_of(5, lambda: hasher.verify(None, PIN))
    assert 0.3 < min(firsts) / real < 1.5 and 0.3 < missing / real < 1.5
    assert not any(fresh.verify(None, pin) for pin in (PIN, WRONG, "000000"))


# --- legacy hashes ----------------------------------------------------------------------------


def _ab64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


_SALT = b"\xfb\xef\xbe-salt-\xff\xfe"  # encodes with '+' and '/' to exercise both alphabets
_DK = hashlib.pbkdf2_hmac("sha256", PIN.encode(), _SALT, 29000)
_BCRYPT_2B = bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(rounds=4)).decode()

LEGACY = {
    "argon2id": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PIN),
    "argon2i": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash(PIN),
    "bcrypt-2a": bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a")).decode(),
    "bcrypt-2b": _BCRYPT_2B,
    "bcrypt-2y": "$2y$" + _BCRYPT_2B[4:],
    "pbkdf2-passlib": f"$pbkdf2-sha256$29000${_ab64(_SALT)}${_ab64(_DK)}",
    "pbkdf2-phc": f"$pbkdf2-sha256$i=29000,l=32${_b64(_SALT)}${_b64(_DK)}",
}


@pytest.mark.parametrize("scheme", sorted(LEGACY))
def test_legacy_hash_verifies_right_pin_only(hasher: PinHasher, scheme: str) -> None:
    value = LEGACY[scheme]
    assert legacy_hash_problem(value) is None
    imported = import_legacy_hash(value, PEPPERS)
    assert imported.startswith(LEGACY_PREFIX + "k1:") and value[8:] not in imported
    assert hasher.verify(imported, PIN) is True
    assert hasher.verify(imported, WRONG) is False
    assert hasher.needs_rehash(imported) is True
    assert hasher.verify(value, PIN) is False  # without the prefix it is not one of ours
    # As imports stored them before they were sealed: still verified.
    assert hasher.verify(LEGACY_PREFIX + value, PIN) is True
    # Sealed with another pepper, it opens to nothing: a wrong PIN, never an error.
    other = import_legacy_hash(value, Peppers({1: b"another-pepper-entirely"}, "test"))
    assert hasher.verify(other, PIN) is False


_FAKE_B64 = "c2FsdHNhbHRzYWx0c2FsdA"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("5f4dcc3b5aa765d61d8327deb882cf99", "unknown PIN hash format"),
        ("$1$saltsalt$qjXMvOEqjwuMbUxwjuJkX/", "unknown PIN hash format"),
        ("$pbkdf2-sha1$29000$c2FsdA$aGFzaA", "unknown PIN hash format"),
        (_BCRYPT_2B[:-5], "malformed bcrypt hash"),
        ("$2b$04$" + "z" * 53, "malformed bcrypt hash"),  # salt bcrypt itself refuses
        ("$2b$31$" + _BCRYPT_2B[7:], "bcrypt cost out of the accepted range"),
        ("$pbkdf2-sha256$29000$c2Fsd!$aGFzaA", "malformed PBKDF2-SHA256 hash"),
        (f"$pbkdf2-sha256$i=29000,l=16${_b64(_SALT)}${_b64(_DK)}", "bad digest length"),
        (f"$pbkdf2-sha256$10${_ab64(_SALT)}${_ab64(_DK)}", "rounds out of the accepted range"),
        ("$argon2id$v=19$m=8,t=1$" + _FAKE_B64, "malformed argon2 hash"),
        ("$argon2id$v=19$m=65536,t=3,p=4$SALTSALT!!$HASHHASH", "malformed argon2 hash"),
        (f"$argon2id$v=19$m=8,t=1,p=1$c2FsdA${_FAKE_B64}", "salt or digest too short"),
        (f"$argon2id$v=19$m=4194304,t=2,p=1${_FAKE_B64}${_FAKE_B64}", "too costly"),
        ("$2b$" + "a" * 300, "too long"),
    ],
)
def test_unusable_legacy_hash_is_rejected_with_reason(value: str, reason: str) -> None:
    problem = legacy_hash_problem(value)
    assert problem is not None
    assert reason in problem
    assert value[8:] not in problem
    with pytest.raises(InvalidInput, match=reason):
        import_legacy_hash(value, PEPPERS)


def test_a_long_hash_stored_before_sealing_still_verifies(hasher: PinHasher) -> None:
    """Too long to be stored sealed, so refused by an import now; stored as it came by an
    import before 3 December, it must still log its member in."""
    from argon2 import PasswordHasher

    long = PasswordHasher(time_cost=1, memory_cost=1024, hash_len=64, salt_len=32).hash(PIN)
    assert len(long) > 155
    assert legacy_hash_problem(long) == "PIN hash too long to store"
    assert hasher.verify(LEGACY_PREFIX + long, PIN) is True
    assert hasher.verify(LEGACY_PREFIX + long, WRONG) is False


def test_unknown_format_message_names_the_accepted_schemes() -> None:
    assert legacy_hash_problem("md5:abc") == (
        "unknown PIN hash format: must be argon2, bcrypt or PBKDF2-SHA256"
    )


def test_corrupt_legacy_value_never_verifies(hasher: PinHasher) -> None:
    assert hasher.verify(LEGACY_PREFIX + "$pbkdf2-sha256$bad", PIN) is False
