"""The one source of time, so tests can move it instead of sleeping."""

from collections.abc import Callable
from datetime import UTC, datetime

from cpms_admin.errors import InvalidInput

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, as an aware UTC datetime (how every timestamp is stored and compared)."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """Render a timestamp as ISO 8601 in UTC, to the second."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def parse_moment(value: str, *, option: str) -> datetime:
    """An ISO date or time typed by an agent (`--since 2026-11-30`), UTC when it has no
    offset; InvalidInput naming `option` otherwise."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{option} must be an ISO date or time, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
