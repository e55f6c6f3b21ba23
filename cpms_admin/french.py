"""French dates, Paris time, counts and waits, as members read them in letters, e-mails and
on the portal, whatever the system locale or time zone."""

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


def plural(count: int, word: str) -> str:
    """`1 tentative`, `2 tentatives` (French: the singular up to 1)."""
    return f"{count} {word}{'s' if count > 1 else ''}"


def wait_phrase(seconds: int) -> str:
    """`1 minute`, `2 minutes`, `45 secondes`, `1 heure`: a wait, rounded up."""
    if seconds < 60:
        return plural(seconds, "seconde")
    minutes = -(-seconds // 60)
    if minutes < 60 or minutes % 60:
        return plural(minutes, "minute")
    return plural(minutes // 60, "heure")
