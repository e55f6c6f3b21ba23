"""The per-NIR rate limit of the portal's code requests.

Every request is logged for 24 hours under the keyed hash of its NIR (`unknown_nir`), a
member's and an unknown NIR's alike, so the log names nobody and both cost the same work.
Every request the limit admits counts towards `CPMS_CODE_REQUESTS_PER_DAY`, whether it sent
a code, found a letter on its way or came from an unknown NIR: the limit is the same for
all. Refused ones are logged all the same (same work) and do not count. A NIR's requests
older than 24 hours are dropped at its next request; those of NIRs never asked for again
stay until a retention purge drops them.
"""

from datetime import datetime, timedelta

from sqlalchemy import delete, func, text
from sqlmodel import Session, col, select

from cpms_admin.models import CodeRequest

WINDOW = timedelta(hours=24)


def lock_and_count(session: Session, *, key: str, now: datetime) -> int:
    """Requests admitted for `key` within the last 24 hours. First takes the key's lock until
    the transaction ends (on SQLite the write lock already serialises), so concurrent
    requests for one NIR are counted one after the other, and forgets the key's older
    requests (only the key's: requests for other NIRs never wait on these rows)."""
    if session.get_bind().dialect.name == "postgresql":
        session.exec(  # type: ignore[call-overload]
            text("SELECT pg_advisory_xact_lock(:lock)"),
            params={"lock": int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)},
        )
    session.exec(
        delete(CodeRequest).where(
            col(CodeRequest.subject) == key, col(CodeRequest.at) <= now - WINDOW
        )
    )
    return int(
        session.exec(
            select(func.count())
            .select_from(CodeRequest)
            .where(col(CodeRequest.subject) == key, col(CodeRequest.counted))
        ).one()
    )


def log_request(session: Session, *, key: str, now: datetime, counted: bool) -> None:
    """Log one request in the caller's transaction; `counted` when the limit admitted it."""
    session.add(CodeRequest(subject=key, at=now, counted=counted))
