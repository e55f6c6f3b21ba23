"""The lockout rules, as pure functions of an account, the settings and the time."""

from datetime import datetime, timedelta

from cpms_admin.models import Account
from cpms_admin.settings import Settings

ACCOUNT_STATES = ("no_pin", "active", "cooldown", "locked")


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


def remaining_attempts(account: Account, settings: Settings) -> int:
    """Attempts left before the next cool-down (or before the hard lock once past it)."""
    failures = account.failed_attempts
    if failures < settings.lockout_max_failures:
        return settings.lockout_max_failures - failures
    return max(settings.lockout_hard_after - failures, 0)
