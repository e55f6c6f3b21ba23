"""The one source of time, so tests can move it instead of sleeping."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

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


# The zone names the tables print after a time (french.agent_time), and the offsets they
# name: a time copied from a table means what the table meant, in the hour that autumn's
# change repeats too.
_PARIS_ZONES = {"CET": timezone(timedelta(hours=1)), "CEST": timezone(timedelta(hours=2))}


def parse_moment(value: str, *, option: str) -> datetime:
    """An ISO date or time typed by an agent (`--since 2026-11-30`), UTC when it has no
    offset, Paris time when it ends in CET or CEST as the tables print it (`2026-12-04 19:09
    CET`); InvalidInput naming `option` otherwise."""
    text, _, zone = value.strip().rpartition(" ")
    paris = _PARIS_ZONES.get(zone.upper())
    try:
        moment = datetime.fromisoformat(text if paris else value.strip())
    except ValueError:
        raise InvalidInput(
            f"{option} must be an ISO date or time (UTC, or Paris time followed by CET or "
            f"CEST as the tables show it), got {value!r}"
        ) from None
    if paris and moment.tzinfo is None:
        moment = moment.replace(tzinfo=paris)
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a moment before the calendar's first
        raise InvalidInput(f"{option} {value!r} is out of the calendar's range") from None
