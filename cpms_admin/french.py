"""French dates and Paris time, as members read them in letters and e-mails, whatever the
system locale or time zone."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def french_date(day: date) -> str:
    """`23 novembre 2026`, `1er décembre 2026`."""
    number = "1er" if day.day == 1 else str(day.day)
    return f"{number} {MONTHS[day.month - 1]} {day.year}"


def agent_time(moment: datetime | None) -> str:
    """A moment as an agent in France reads it: `2026-11-30 23:03 CET` (the JSON says UTC)."""
    if moment is None:
        return ""
    return f"{paris_time(moment):%Y-%m-%d %H:%M %Z}"


def paris_time(moment: datetime) -> datetime:
    """`moment` in Paris time; a naive datetime (as SQLite returns them) is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(PARIS)
