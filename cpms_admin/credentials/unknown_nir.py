"""PIN attempts for a NIR that is no member's, counted exactly like a member's.

Its failures live in an `unknown_login` row keyed by a keyed hash of the NIR (so the table
does not list the NIRs people tried), created on the first failure and counted by the very
function that counts a member's (`lockout.count_failure`): the same gate, the same atomic
increment, hence the same answers, cool-downs and lock, even under concurrent guesses.
"""

import functools
import hashlib
import hmac
import importlib
from datetime import datetime

from sqlmodel import Session, col

from cpms_admin.credentials.lockout import Counters, count_failure
from cpms_admin.models import UnknownLogin
from cpms_admin.pepper import load_peppers
from cpms_admin.settings import Settings

_KEY_LABEL = b"cpms-unknown-nir-v1"  # separates this key from the PIN and code keys


@functools.lru_cache(maxsize=8)
def _key(pepper: bytes) -> bytes:
    return hmac.new(pepper, _KEY_LABEL, hashlib.sha256).digest()


def subject_of(nir: str, settings: Settings) -> str:
    """The row key of a compact NIR: HMAC-SHA256 under a key derived from the current pepper,
    in hex. (A pepper rotation starts these counters, and the code request log, afresh.)"""
    key = _key(load_peppers(settings).current)
    return hmac.new(key, nir.encode("ascii"), hashlib.sha256).hexdigest()


def read_counters(session: Session, subject: str, *, lock_at: datetime | None = None) -> Counters:
    """The counters as they are now (none before the first failure). With `lock_at` (now),
    the row is created if need be and held until the transaction ends."""
    if lock_at is not None:
        _ensure_row(session, subject, lock_at)
    row = session.get(
        UnknownLogin,
        subject,
        populate_existing=True,
        with_for_update=True if lock_at is not None else None,
    )
    return Counters() if row is None else Counters.of(row)


def _ensure_row(session: Session, subject: str, now: datetime) -> None:
    """Create the row unless it exists (a concurrent creation simply finds it there)."""
    # The dialect's own INSERT (for ON CONFLICT), imported on use: the PostgreSQL dialect
    # alone would add a tenth to every command's start-up.
    dialect = importlib.import_module(f"sqlalchemy.dialects.{session.get_bind().dialect.name}")
    session.exec(
        dialect.insert(UnknownLogin)
        .values(subject=subject, failed_attempts=0, captcha_required=False, last_attempt_at=now)
        .on_conflict_do_nothing(index_elements=[col(UnknownLogin.subject)])
    )


def record_failure(
    session: Session, *, subject: str, captcha_ok: bool, settings: Settings, now: datetime
) -> Counters | None:
    """Create the row if it is the first failure, then count like an account; None when the
    row is blocked. Does not commit."""
    _ensure_row(session, subject, now)
    return count_failure(
        session,
        table=UnknownLogin,
        row=col(UnknownLogin.subject) == subject,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        last_attempt_at=now,
    )
