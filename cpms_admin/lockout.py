"""The lockout rules, as pure functions of the failure counters, the settings and the time.

Kept free of the database so that the path for an unknown NIR (which has no account row)
follows exactly the same rules as a real account: the portal cannot tell them apart.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cpms_admin.models import Account
from cpms_admin.settings import Settings

ACCOUNT_STATES = ("no_pin", "active", "cooldown", "locked")


@dataclass(frozen=True)
class Counters:
    """The lockout part of an account: consecutive failures and what they imposed."""

    failures: int = 0
    locked_until: datetime | None = None  # end of the current cool-down
    captcha_required: bool = False
    hard_locked: bool = False

    @classmethod
    def of(cls, account: Account) -> "Counters":
        return cls(
            failures=account.failed_attempts,
            locked_until=account.locked_until,
            captcha_required=account.captcha_required,
            hard_locked=account.hard_locked_at is not None,
        )


@dataclass(frozen=True)
class Block:
    """Why an attempt is refused before the PIN is even looked at."""

    reason: str  # locked | cooldown | captcha_required
    retry_after_seconds: int | None = None


def account_state(account: Account, now: datetime) -> str:
    """`locked` (hard lock), `cooldown` (must wait), `no_pin` (never personalised) or `active`."""
    if account.hard_locked_at is not None:
        return "locked"
    if account.locked_until is not None and account.locked_until > now:
        return "cooldown"
    if account.pin_hash is None:
        return "no_pin"
    return "active"


def cooldown_after(failures: int, settings: Settings) -> timedelta | None:
    """The wait imposed after `failures` consecutive failures: none below the threshold, then
    the base cool-down doubling with each further failure, up to the cap."""
    if failures < settings.lockout_max_failures:
        return None
    doublings = failures - settings.lockout_max_failures
    seconds = settings.lockout_cooldown_seconds * (2 ** min(doublings, 32))
    return timedelta(seconds=min(seconds, settings.lockout_cooldown_cap_seconds))


def attempts_left(failures: int, settings: Settings) -> int:
    """Attempts left before the next cool-down (or before the hard lock once past it)."""
    if failures < settings.lockout_max_failures:
        return settings.lockout_max_failures - failures
    return max(settings.lockout_hard_after - failures, 0)


def seconds_until(moment: datetime | None, now: datetime) -> int | None:
    """Whole seconds from `now` to `moment`, rounded up; None when it is not in the future."""
    if moment is None or moment <= now:
        return None
    return math.ceil((moment - now).total_seconds())


def blocked(counters: Counters, *, now: datetime, captcha_ok: bool) -> Block | None:
    """The block an attempt runs into now, if any: the hard lock first, then the cool-down,
    then the CAPTCHA the portal must have checked (`captcha_ok`)."""
    if counters.hard_locked:
        return Block("locked")
    wait = seconds_until(counters.locked_until, now)
    if wait is not None:
        return Block("cooldown", wait)
    if counters.captcha_required and not captcha_ok:
        return Block("captcha_required")
    return None


def after_failures(failures: int, *, now: datetime, settings: Settings) -> Counters:
    """The counters once the `failures`-th consecutive failure is recorded at `now`."""
    wait = cooldown_after(failures, settings)
    return Counters(
        failures=failures,
        locked_until=now + wait if wait is not None else None,
        captcha_required=failures >= settings.lockout_max_failures,
        hard_locked=failures >= settings.lockout_hard_after,
    )
