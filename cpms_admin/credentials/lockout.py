"""The lockout rules, and their atomic enforcement on a row that carries the counters.

The rules are pure functions of the failure counters, the settings and the time. The same
counters live on a member's `Account` and on the `UnknownLogin` row of a NIR that is no
member's, and one function counts failures on either: the portal cannot tell them apart.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, not_, or_, update
from sqlmodel import Session, col

from cpms_admin.models import Account, UnknownLogin
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AccountState, Blocked

CountedTable = type[Account] | type[UnknownLogin]


@dataclass(frozen=True)
class Counters:
    """The lockout part of an account: consecutive failures and what they imposed."""

    failures: int = 0
    locked_until: datetime | None = None  # end of the current cool-down
    captcha_required: bool = False
    hard_locked: bool = False

    @classmethod
    def of(cls, row: Account | UnknownLogin) -> "Counters":
        return cls(
            failures=row.failed_attempts,
            locked_until=row.locked_until,
            captcha_required=row.captcha_required,
            hard_locked=row.hard_locked_at is not None,
        )


@dataclass(frozen=True)
class Block:
    """Why an attempt is refused before the PIN is even looked at."""

    reason: Blocked
    retry_after_seconds: int | None = None


def account_state(account: Account, now: datetime) -> AccountState:
    if account.hard_locked_at is not None:
        return AccountState.locked
    if account.locked_until is not None and account.locked_until > now:
        return AccountState.cooldown
    if account.pin_hash is None:
        return AccountState.no_pin
    return AccountState.active


def lift_lockout(account: Account) -> bool:
    """Clear the failures, the cool-down, the CAPTCHA flag and the hard lock, so the member
    may try again at once (the caller saves it); False when there was nothing to clear."""
    held = bool(
        account.failed_attempts
        or account.locked_until
        or account.captcha_required
        or account.hard_locked_at
    )
    account.failed_attempts, account.locked_until = 0, None
    account.captcha_required, account.hard_locked_at = False, None
    return held


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


def blocked(
    counters: Counters, *, now: datetime, captcha_ok: bool, settings: Settings
) -> Block | None:
    """The block an attempt runs into now, if any: the hard lock first, then the cool-down,
    then the CAPTCHA the portal must have checked (`captcha_ok`).

    A cool-down never has more left than its whole length: an attempt's `now` is read as it
    starts, and another attempt may lock the account a moment later (a burst of guesses),
    which would tell this one to wait 61 s, "2 minutes", for a cool-down of 60."""
    if counters.hard_locked:
        return Block(Blocked.locked)
    wait = seconds_until(counters.locked_until, now)
    if wait is not None:
        whole = cooldown_after(counters.failures, settings)
        return Block(
            Blocked.cooldown, min(wait, math.ceil(whole.total_seconds())) if whole else wait
        )
    if counters.captcha_required and not captcha_ok:
        return Block(Blocked.captcha_required)
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


def open_to_attempts(
    table: CountedTable, *, now: datetime, captcha_ok: bool
) -> list[ColumnElement[bool]]:
    """`blocked` as a WHERE clause: the row lets an attempt through right now."""
    conditions = [
        col(table.hard_locked_at).is_(None),
        or_(col(table.locked_until).is_(None), col(table.locked_until) <= now),
    ]
    if not captcha_ok:
        conditions.append(not_(col(table.captcha_required)))
    return conditions


def count_failure(
    session: Session,
    *,
    table: CountedTable,
    row: ColumnElement[bool],
    captcha_ok: bool,
    settings: Settings,
    now: datetime,
    **values: Any,
) -> Counters | None:
    """Count one failure on the `row` of `table` and apply the cool-down or hard lock it
    brings (also writing `values`); None when the row is blocked, e.g. another attempt locked
    it since it was read.

    The increment repeats the gate in its WHERE clause and returns the new count, so
    concurrent attempts queue on the row lock (PostgreSQL) or the write lock (SQLite): none
    is lost, none is counted once another has locked the row. Does not commit.
    """
    failures = session.exec(
        update(table)
        .where(row, *open_to_attempts(table, now=now, captcha_ok=captcha_ok))
        .values(failed_attempts=col(table.failed_attempts) + 1)
        .returning(col(table.failed_attempts))
    ).scalar_one_or_none()
    if failures is None:
        return None
    counters = after_failures(failures, now=now, settings=settings)
    values.update(locked_until=counters.locked_until, captcha_required=counters.captcha_required)
    if counters.hard_locked:
        values["hard_locked_at"] = now
    session.exec(update(table).where(row).values(**values))
    return counters
