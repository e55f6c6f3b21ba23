"""PIN attempts for a NIR that is no member's, counted exactly like a member's.

Its failures live in an `unknown_login` row keyed by a keyed hash of the NIR (so the table
does not list the NIRs people tried), created on the first failure and counted by the very
function that counts a member's (`lockout.count_failure`): the same gate, the same atomic
increment, hence the same answers, cool-downs and lock, even under concurrent guesses.

The key is made with the current pepper and tagged with its id (`k<id>$`, none for pepper
1). A pepper rotation changes every NIR's key, where a member's counters stay on their
account: the row made under an older pepper is read as long as that pepper is at hand, and
moved to the current key at the NIR's next wrong PIN or any code it tries, so a rotation
unlocks no one.
"""

import functools
import hashlib
import hmac
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from cpms_admin.credentials.lockout import Counters, count_failure
from cpms_admin.models import UnknownLogin
from cpms_admin.pepper import Peppers, load_peppers, tagged
from cpms_admin.settings import Settings

_KEY_LABEL = b"cpms-unknown-nir-v1"  # separates this key from the PIN and code keys


@functools.lru_cache(maxsize=8)
def _key(pepper: bytes) -> bytes:
    return hmac.new(pepper, _KEY_LABEL, hashlib.sha256).digest()


def _digest(pepper: bytes, nir: str) -> str:
    return hmac.new(_key(pepper), nir.encode("ascii"), hashlib.sha256).hexdigest()


def request_key(nir: str, settings: Settings) -> str:
    """The key of a compact NIR's code requests (`code_request`, members' and unknown NIRs'
    alike): the current pepper's digest, untagged. A rotation starts everyone's daily request
    count afresh."""
    return _digest(load_peppers(settings).current, nir)


@dataclass(frozen=True)
class CounterKeys:
    """The row keys of a compact NIR's counters: `current`, and those the older peppers at
    hand made (`older`), where a rotation left them."""

    current: str
    older: tuple[str, ...]

    @classmethod
    def of(cls, nir: str, peppers: Peppers) -> "CounterKeys":
        current, *older = (
            tagged(key_id, "$", _digest(peppers.secrets[key_id], nir))
            for key_id in sorted(peppers.secrets, reverse=True)
        )
        return cls(current, tuple(older))


def keys_of(nir: str, settings: Settings) -> CounterKeys:
    """The keys of a compact NIR's counters under the configured peppers."""
    return CounterKeys.of(nir, load_peppers(settings))


def read_counters(
    session: Session, keys: CounterKeys, *, lock_at: datetime | None = None
) -> Counters:
    """The counters as they are now (none before the first failure). With `lock_at` (now),
    the row is created if need be (or moved from older peppers' keys) and held until the
    transaction ends."""
    if lock_at is not None:
        _ensure_row(session, keys, lock_at)
        row = session.get(UnknownLogin, keys.current, populate_existing=True, with_for_update=True)
        return Counters() if row is None else Counters.of(row)
    rows = session.exec(
        select(UnknownLogin)
        .where(col(UnknownLogin.subject).in_((keys.current, *keys.older)))
        .execution_options(populate_existing=True)
    ).all()
    return Counters.of(_combined(rows, UnknownLogin(subject=keys.current))) if rows else Counters()


def _ensure_row(session: Session, keys: CounterKeys, now: datetime) -> None:
    """Create the row unless it exists (a concurrent creation simply finds it there), or
    move it from older peppers' keys."""
    if keys.older:
        _carry_over(session, keys)
    # The dialect's own INSERT (for ON CONFLICT), imported on use: the PostgreSQL dialect
    # alone would add a tenth to every command's start-up.
    dialect = importlib.import_module(f"sqlalchemy.dialects.{session.get_bind().dialect.name}")
    session.exec(
        dialect.insert(UnknownLogin)
        .values(
            subject=keys.current, failed_attempts=0, captcha_required=False, last_attempt_at=now
        )
        .on_conflict_do_nothing(index_elements=[col(UnknownLogin.subject)])
    )


def _carry_over(session: Session, keys: CounterKeys) -> None:
    """Move the counters older peppers' keys hold to the current key. Concurrent attempts
    queue on the older rows: the second finds them moved."""
    older = col(UnknownLogin.subject).in_(keys.older)
    # populate_existing: the rows as they are now, not as an earlier read left them
    rows = session.exec(
        select(UnknownLogin)
        .where(older)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    if not rows:
        return
    current = session.get(UnknownLogin, keys.current, with_for_update=True, populate_existing=True)
    target = current or UnknownLogin(subject=keys.current)
    session.add(_combined([*rows, *([current] if current else [])], target))
    for row in rows:
        session.delete(row)
    session.flush()


def _combined(rows: Sequence[UnknownLogin], into: UnknownLogin) -> UnknownLogin:
    """`rows`' counters as one, written `into`. When the current key has some beside an older
    one's, each counted failures of its own (one made under the old key as a rotation
    committed, or under the new one while an old pepper's line was missing from the file):
    they add up, and the strictest lock stays."""
    into.failed_attempts = sum(row.failed_attempts for row in rows)
    into.locked_until = max(
        (row.locked_until for row in rows if row.locked_until is not None), default=None
    )
    into.captcha_required = any(row.captcha_required for row in rows)
    into.hard_locked_at = min(
        (row.hard_locked_at for row in rows if row.hard_locked_at is not None), default=None
    )
    into.last_attempt_at = max(row.last_attempt_at for row in rows)
    return into


def record_failure(
    session: Session, *, nir: str, captcha_ok: bool, settings: Settings, now: datetime
) -> Counters | None:
    """Create the row if it is the first failure, then count like an account; None when the
    row is blocked. Does not commit. The keys are those of the peppers at hand now: a
    rotation may have come since the attempt read the counters (argon2 takes a while)."""
    keys = keys_of(nir, settings)
    _ensure_row(session, keys, now)
    return count_failure(
        session,
        table=UnknownLogin,
        row=col(UnknownLogin.subject) == keys.current,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        last_attempt_at=now,
    )
