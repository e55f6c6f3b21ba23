"""The lockout rules and the portal's French wording, without a database."""

from datetime import UTC, datetime, timedelta

import pytest

from cpms_admin.credentials.lockout import (
    Block,
    Counters,
    after_failures,
    attempts_left,
    blocked,
    cooldown_after,
)
from cpms_admin.french import wait_phrase
from cpms_admin.portal import answers
from cpms_admin.settings import Settings

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DEFAULTS = Settings()


def test_no_wait_below_three_failures_then_doubling_up_to_the_cap() -> None:
    waits = [cooldown_after(n, DEFAULTS) for n in range(1, 11)]
    seconds = [None if w is None else int(w.total_seconds()) for w in waits]
    assert seconds == [None, None, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_rules_follow_the_settings() -> None:
    strict = Settings(lockout_max_failures=2, lockout_cooldown_seconds=30, lockout_hard_after=4)
    assert cooldown_after(2, strict) == timedelta(seconds=30)
    assert [attempts_left(n, strict) for n in range(5)] == [2, 1, 2, 1, 0]
    assert after_failures(4, now=NOW, settings=strict).hard_locked


def test_attempts_left_counts_down_to_the_cooldown_then_to_the_lock() -> None:
    assert [attempts_left(n, DEFAULTS) for n in range(12)] == [3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0, 0]


def test_third_failure_imposes_wait_and_captcha_tenth_locks() -> None:
    second, third = (after_failures(n, now=NOW, settings=DEFAULTS) for n in (2, 3))
    assert second == Counters(failures=2)
    assert third.locked_until == NOW + timedelta(seconds=60)
    assert third.captcha_required and not third.hard_locked
    assert after_failures(10, now=NOW, settings=DEFAULTS).hard_locked


def test_the_lock_comes_first_then_the_wait_then_the_captcha() -> None:
    cooling = Counters(3, NOW + timedelta(seconds=30), captcha_required=True)
    assert blocked(cooling, now=NOW, captcha_ok=True, settings=DEFAULTS) == Block("cooldown", 30)
    assert blocked(
        cooling, now=NOW + timedelta(seconds=30), captcha_ok=False, settings=DEFAULTS
    ) == Block("captcha_required")
    assert (
        blocked(cooling, now=NOW + timedelta(seconds=30), captcha_ok=True, settings=DEFAULTS)
        is None
    )
    locked = Counters(10, NOW + timedelta(hours=1), captcha_required=True, hard_locked=True)
    assert blocked(
        locked, now=NOW + timedelta(days=9), captcha_ok=True, settings=DEFAULTS
    ) == Block("locked")


def test_partial_seconds_of_wait_round_up() -> None:
    counters = Counters(3, NOW + timedelta(seconds=59, milliseconds=1))
    assert blocked(counters, now=NOW, captcha_ok=True, settings=DEFAULTS) == Block("cooldown", 60)


def test_a_wait_is_never_longer_than_the_whole_cool_down() -> None:
    """An attempt read its time as it started; another locked the account a moment later (a
    burst of guesses): 60.2 s from that time is still a cool-down of 60 s, not "2 minutes"."""
    locked_later = Counters(3, NOW + timedelta(seconds=60, milliseconds=200))
    assert blocked(locked_later, now=NOW, captcha_ok=True, settings=DEFAULTS) == Block(
        "cooldown", 60
    )
    fourth = Counters(4, NOW + timedelta(seconds=120, milliseconds=200))  # the wait doubled
    assert blocked(fourth, now=NOW, captcha_ok=True, settings=DEFAULTS) == Block("cooldown", 120)


@pytest.mark.parametrize(
    ("seconds", "phrase"),
    [(1, "1 seconde"), (45, "45 secondes"), (60, "1 minute"), (61, "2 minutes"),
     (1920, "32 minutes"), (3600, "1 heure"), (7200, "2 heures"), (5400, "90 minutes")],
)  # fmt: skip
def test_waits_are_said_in_french(seconds: int, phrase: str) -> None:
    assert wait_phrase(seconds) == phrase


def test_messages_use_the_help_pages_wording() -> None:
    first = after_failures(1, now=NOW, settings=DEFAULTS)
    assert answers.wrong_secret(first, guessed="pin", settings=DEFAULTS, now=NOW) == (
        "Mot de passe erroné. Attention, il vous reste 2 tentatives avant de devoir patienter "
        "1 minute."
    )
    second = after_failures(2, now=NOW, settings=DEFAULTS)
    assert answers.wrong_secret(second, guessed="pin", settings=DEFAULTS, now=NOW).endswith(
        "il vous reste 1 tentative avant de devoir patienter 1 minute."
    )
    third = after_failures(3, now=NOW, settings=DEFAULTS)
    assert answers.wrong_secret(third, guessed="pin", settings=DEFAULTS, now=NOW) == (
        "Mot de passe erroné. Par mesure de sécurité, vous devez patienter 1 minute avant une "
        "nouvelle tentative. Attention, il vous reste 7 tentatives avant le blocage de votre accès."
    )
    # A wrong code spends the same budget, and says so in the same words.
    assert answers.wrong_secret(third, guessed="code", settings=DEFAULTS, now=NOW) == (
        "Code de sécurité erroné ou expiré. Par mesure de sécurité, vous devez patienter "
        "1 minute avant une nouvelle tentative. Attention, il vous reste 7 tentatives avant le "
        "blocage de votre accès."
    )
    tenth = after_failures(10, now=NOW, settings=DEFAULTS)
    locked = answers.wrong_secret(tenth, guessed="pin", settings=DEFAULTS, now=NOW)
    # Locked: only an agent can help now; asking for a code would be refused.
    assert locked.endswith("Pour le débloquer, contactez le service clients.")
    assert answers.blocked(Block("cooldown", 60)) == (
        "Par mesure de sécurité, vous devez patienter 1 minute avant une nouvelle tentative."
    )
    assert "CAPTCHA" in answers.blocked(Block("captcha_required"))


def test_each_count_names_what_comes_after_it_whatever_the_settings() -> None:
    """The number left always counts down to the consequence the message names."""
    no_wait = Settings(lockout_max_failures=3, lockout_hard_after=3)  # straight to the lock
    first = after_failures(1, now=NOW, settings=no_wait)
    assert answers.wrong_secret(first, guessed="pin", settings=no_wait, now=NOW) == (
        "Mot de passe erroné. Attention, il vous reste 2 tentatives avant le blocage de votre "
        "accès."
    )
    long = Settings(lockout_max_failures=5, lockout_cooldown_seconds=150, lockout_hard_after=6)
    assert answers.wrong_secret(
        after_failures(4, now=NOW, settings=long), guessed="code", settings=long, now=NOW
    ) == (
        "Code de sécurité erroné ou expiré. Attention, il vous reste 1 tentative avant de devoir "
        "patienter 3 minutes."
    )
    assert answers.wrong_secret(
        after_failures(5, now=NOW, settings=long), guessed="pin", settings=long, now=NOW
    ) == (
        "Mot de passe erroné. Par mesure de sécurité, vous devez patienter 3 minutes avant une "
        "nouvelle tentative. Attention, il vous reste 1 tentative avant le blocage de votre accès."
    )


def test_every_weakness_reason_has_a_french_explanation() -> None:
    from cpms_admin.credentials.pins import COMMON_PINS, pin_weakness

    samples = ["777777", "345678", "121212", "112233", "140585"]
    weak = COMMON_PINS
    reasons = {pin_weakness(p, weak_pins=weak, nir="185057800608491") for p in samples}
    assert None not in reasons and len(reasons) == 5
    for reason in reasons:
        assert reason is not None
        assert "trop facile à deviner (trop" not in answers.weak_pin(reason)
