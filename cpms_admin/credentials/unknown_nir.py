"""PIN attempts for a NIR that is no member's, counted exactly like a member's.

Its failures live in an `unknown_login` row keyed by a keyed hash of the NIR (so the table
does not list the NIRs people tried), created on the first failure and counted by the very
function that counts a member's (`lockout.count_failure`): the same gate, the same atomic
increment, hence the same answers, cool-downs and lock, even under concurrent guesses.

The key is made with the current pepper and tagged with its id (`k<id>$`, none for pepper
1). A pepper rotation changes every NIR's key, where a member's counters stay on their
account: the row made under an older pepper is read as long as that pepper is at hand, and
moved to the current key when the NIR is next counted, so a rotation unlocks no one.
"""

import functools
import hashlib
import hmac
import importlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, update
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
class UnknownNir:
    """The row keys of a compact NIR's counters: `current`, and those an older pepper at
    hand made (`older`, newest pepper first), where a rotation left them."""

    current: str
    older: tuple[str, ...]

    @classmethod
    def of(cls, nir: str, peppers: Peppers) -> "UnknownNir":
        current, *older = (
            key
            for key_id in sorted(peppers.secrets, reverse=True)
            for key in _keys(key_id, peppers.secrets[key_id], nir)
        )
        return cls(current, tuple(older))


def _keys(key_id: int, pepper: bytes, nir: str) -> tuple[str, ...]:
    """The key pepper `key_id` makes, tagged; and untagged, as a pepper after the first made
    it before revision 0018."""
    digest = _digest(pepper, nir)
    return (tagged(key_id, "$", digest), digest) if key_id != 1 else (digest,)


def subject_of(nir: str, settings: Settings) -> UnknownNir:
    """The keys of a compact NIR's counters under the configured peppers."""
    return UnknownNir.of(nir, load_peppers(settings))


def read_counters(
    session: Session, subject: UnknownNir, *, lock_at: datetime | None = None
) -> Counters:
    """The counters as they are now (none before the first failure). With `lock_at` (now),
    the row is created if need be (or moved from an older pepper's key) and held until the
    transaction ends."""
    if lock_at is not None:
        _ensure_row(session, subject, lock_at)
        row = session.get(
            UnknownLogin, subject.current, populate_existing=True, with_for_update=True
        )
        return Counters() if row is None else Counters.of(row)
    keys = (subject.current, *subject.older)
    found = {
        row.subject: row
        for row in session.exec(
            select(UnknownLogin)
            .where(col(UnknownLogin.subject).in_(keys))
            .execution_options(populate_existing=True)
        )
    }
    row = next((found[key] for key in keys if key in found), None)
    return Counters() if row is None else Counters.of(row)


def _ensure_row(session: Session, subject: UnknownNir, now: datetime) -> None:
    """Create the row unless it exists (a concurrent creation simply finds it there). The
    row an older pepper's key holds, if any, becomes it (the newest; the others go)."""
    if subject.older:
        _carry_over(session, subject)
    # The dialect's own INSERT (for ON CONFLICT), imported on use: the PostgreSQL dialect
    # alone would add a tenth to every command's start-up.
    dialect = importlib.import_module(f"sqlalchemy.dialects.{session.get_bind().dialect.name}")
    session.exec(
        dialect.insert(UnknownLogin)
        .values(
            subject=subject.current, failed_attempts=0, captcha_required=False, last_attempt_at=now
        )
        .on_conflict_do_nothing(index_elements=[col(UnknownLogin.subject)])
    )


def _carry_over(session: Session, subject: UnknownNir) -> None:
    """Move the counters an older pepper's key holds to the current key, unless it has
    some already. Concurrent attempts queue on the older row: the second finds it moved."""
    older = col(UnknownLogin.subject).in_(subject.older)
    rows = session.exec(select(UnknownLogin.subject).where(older).with_for_update()).all()
    if not rows:
        return
    current = session.exec(
        select(UnknownLogin.subject).where(col(UnknownLogin.subject) == subject.current)
    ).first()
    if current is None:
        newest = min(rows, key=subject.older.index)
        session.exec(
            update(UnknownLogin)
            .where(col(UnknownLogin.subject) == newest)
            .values(subject=subject.current)
        )
    session.exec(delete(UnknownLogin).where(older))


def record_failure(
    session: Session, *, subject: UnknownNir, captcha_ok: bool, settings: Settings, now: datetime
) -> Counters | None:
    """Create the row if it is the first failure, then count like an account; None when the
    row is blocked. Does not commit."""
    _ensure_row(session, subject, now)
    return count_failure(
        session,
        table=UnknownLogin,
        row=col(UnknownLogin.subject) == subject.current,
        captcha_ok=captcha_ok,
        settings=settings,
        now=now,
        last_attempt_at=now,
    )
