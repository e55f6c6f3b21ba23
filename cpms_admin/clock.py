"""The one source of time, so tests can move it instead of sleeping."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, as an aware UTC datetime (how every timestamp is stored and compared)."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """Render a timestamp as ISO 8601 in UTC, to the second."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds")
