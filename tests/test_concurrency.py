"""Concurrent attempts at one account, each thread with its own connection and session:
no failure is lost and none slips past the hard lock or the code's try limit."""

import functools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func
from sqlmodel import Session, col, select

from cpms_admin.audit_chain import keyed
from cpms_admin.db import make_engine, release
from cpms_admin.models import AuditEvent, UnknownLogin
from cpms_admin.operations.peppers import rotate
from cpms_admin.pepper import load_peppers, write_pepper_file
from cpms_admin.portal import flows
from cpms_admin.settings import Settings
from tests.cred_helpers import PIN, account_of, codes_of, email_code, give_pin, set_pin
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, FakeClock

THREADS = 6
T = TypeVar("T")


def hammer(
    settings: Settings, attempts_per_thread: int, attempt: Callable[[Session], T]
) -> list[T]:
    """Run `attempt` from THREADS threads at once, each with its own session, sealing the
    audit events with `settings`' peppers as the CLI does."""
    barrier = threading.Barrier(THREADS)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        engine = keyed(
            make_engine(settings.database_url), functools.partial(load_peppers, settings)
        )
        try:
            with Session(engine, expire_on_commit=False) as session:
                barrier.wait()
                for _ in range(attempts_per_thread):
                    outcome = attempt(session)
                    with lock:
                        results.append(outcome)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            release(engine)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


class LeapingClock(FakeClock):
    """Later by `step` at each reading, past the cool-downs: every attempt before the hard
    lock is evaluated, so only the lock can stop them."""

    def __init__(self, step: timedelta = timedelta(hours=2)) -> None:
        super().__init__()
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += self._step
            return self.now


def test_concurrent_wrong_pins_lock_at_exactly_the_threshold(
    session: Session, settings: Settings
) -> None:
    clock = LeapingClock()
    member = make_member(session, welcome=False)
    give_pin(session, settings, member)
    results = hammer(
        settings,
        4,
        lambda s: (
            flows.login(
                s, nir=member.nir, pin="605813", captcha_ok=True, settings=settings, clock=clock
            ).reason
        ),
    )
    counts = Counter(results)
    # Exactly the budget was checked; the rest was refused unchecked (threads read the
    # leaping clock out of order, so some met the cool-down a later reading had begun).
    assert counts.pop("wrong_pin") == 10 and set(counts) <= {"locked", "cooldown"}
    assert counts["locked"] >= 1
    account = account_of(session, member)
    assert account.failed_attempts == 10 and account.hard_locked_at is not None
    counted = session.exec(
        select(func.count()).where(
            col(AuditEvent.action) == "portal.login", col(AuditEvent.outcome) == "wrong_pin"
        )
    ).one()
    assert counted == 10


def test_concurrent_wrong_codes_and_pins_share_one_budget(
    session: Session, settings: Settings
) -> None:
    """Threads guessing the code and threads guessing the PIN at once: the code dies after
    its 5 tries, and the account after 10 guesses of either kind, not one more checked."""
    quick = replace(settings, lockout_cooldown_seconds=1, lockout_cooldown_cap_seconds=1)
    clock = LeapingClock(timedelta(seconds=2))  # past each cool-down, within the code's life
    member = make_member(session, welcome=False)
    give_pin(session, quick, member)
    code = email_code(session, quick, clock, member)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    turn = iter(range(10**6))

    def guess(s: Session) -> str:
        if next(turn) % 2:
            return flows.login(
                s, nir=member.nir, pin="605813", captcha_ok=True, settings=quick, clock=clock
            ).reason
        return set_pin(s, quick, clock, member.nir, wrong, using="code", captcha_ok=True).reason

    counts = Counter(hammer(quick, 4, guess))
    checked = counts.pop("wrong_code", 0) + counts.pop("dead_code", 0) + counts.pop("wrong_pin", 0)
    assert checked == 10 and set(counts) <= {"locked", "cooldown"}, counts
    (row,) = codes_of(session, member)
    assert row.failed_tries <= 5
    account = account_of(session, member)
    assert account.failed_attempts == 10 and account.hard_locked_at is not None
    failures = session.exec(
        select(func.count()).where(
            col(AuditEvent.outcome).in_(("wrong_pin", "wrong_code", "dead_code"))
        )
    ).one()
    assert failures == 10
    # The right PIN now changes nothing: only an agent can step in.
    late = flows.login(
        session, nir=member.nir, pin=PIN, captcha_ok=True, settings=quick, clock=clock
    )
    assert (late.ok, late.reason) == (False, "locked")


def test_concurrent_wrong_pins_after_a_rotation_carry_an_unknown_nir_to_exactly_the_lock(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    """A stranger's counters made under the old pepper are moved to the new one by the first
    attempt after a rotation; the attempts that race it neither start them afresh nor lose
    a failure: 7 before, exactly 3 after, then the lock."""
    stranger, clock = make_nir(), LeapingClock()
    path = tmp_path / "pepper"
    write_pepper_file(path, {1: TEST_PEPPER})
    filed = replace(settings, pepper=None, pepper_file=str(path))

    def guess(s: Session) -> None:
        flows.login(s, nir=stranger, pin="605813", captcha_ok=True, settings=filed, clock=clock)

    for _ in range(7):
        guess(session)
    rotate(session, settings=filed, agent="admin", clock=clock)
    assert len(hammer(filed, 3, guess)) == 18
    session.rollback()
    counted = session.exec(
        select(func.count()).where(
            col(AuditEvent.action) == "portal.login", col(AuditEvent.outcome) == "unknown_member"
        )
    ).one()
    assert counted == 10  # the others were refused, blocked ("unknown_blocked")
    ((subject, failures, locked),) = session.exec(
        select(UnknownLogin.subject, UnknownLogin.failed_attempts, UnknownLogin.hard_locked_at)
    ).all()
    assert (subject[:3], failures, locked is not None) == ("k2$", 10, True)
