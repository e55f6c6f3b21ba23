"""Settings: every rule and location, read from the environment or a TOML config file; and
where the package's own templates are (`templates_dir`), which no setting changes.

Each field maps to `CPMS_<FIELD>` in the environment (which wins) and to `<field>` in the
file named by `CPMS_CONFIG`. Nothing here touches the database or the disk beyond that file.

Every integer setting carries its bounds, checked whenever a `Settings` is made: a negative
cool-down or code lifetime would silently switch a protection off, so it is refused (exit 5),
naming the setting as the user wrote it. An empty integer variable is unset; an empty text
setting that has a default is refused, as a letter or an e-mail would print it.
"""

import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from cpms_admin.english import noun
from cpms_admin.errors import NotReady

DEFAULT_DATABASE_URL = "sqlite:///data/cpms.db"
_PACKAGE_DIR = Path(__file__).parent

# The largest count a command takes (`--limit`): far above any real run, far below the
# 64-bit LIMIT of the engines (a larger number would be a database error, not a usage error).
LIMIT_MAX = 1_000_000_000


def _bounded(default: int, low: int, high: int, unit: str = "") -> Any:
    """An integer setting that must lie in [low, high]; `unit` is named in the error."""
    return field(default=default, metadata={"bounds": (low, high), "unit": unit})


@dataclass(frozen=True)
class Settings:
    # Secrets (the pepper, passwords inside URLs) stay out of repr(), hence out of logs.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    pepper: str | None = field(default=None, repr=False)
    pepper_file: str | None = field(default=None, metadata={"path": True})
    smtp_url: str | None = field(default=None, repr=False)
    # unset: `outbox` beside the database (`outbox`, below)
    mail_dir: str | None = field(default=None, metadata={"path": True})
    mail_from: str = "CPMS Espace Adhérent <ne-pas-repondre@cpms.fr>"
    portal_url: str = "https://adherent.cpms.fr"
    lockout_max_failures: int = _bounded(3, 1, 100)
    lockout_cooldown_seconds: int = _bounded(60, 1, 86_400, "seconds")
    lockout_cooldown_cap_seconds: int = _bounded(3600, 1, 604_800, "seconds")
    lockout_hard_after: int = _bounded(10, 1, 1000)
    code_email_ttl_minutes: int = _bounded(10, 1, 1440, "minutes")
    code_post_ttl_days: int = _bounded(30, 1, 365, "days")
    code_max_tries: int = _bounded(5, 1, 100)
    code_requests_per_day: int = _bounded(3, 1, 100)  # codes the portal sends a NIR per 24 h
    smtp_timeout_seconds: int = _bounded(10, 1, 300, "seconds")  # each network operation
    smtp_deadline_seconds: int = _bounded(20, 1, 600, "seconds")  # a whole SMTP session
    terms_version: str = "2026-01"
    weak_pins: str | None = None  # "a,b,c": refused beside credentials.pins.COMMON_PINS
    argon2_memory_kib: int = _bounded(19_456, 19_456, 4_194_304, "KiB")  # OWASP minimum
    argon2_time_cost: int = _bounded(2, 2, 100)
    argon2_parallelism: int = _bounded(1, 1, 64)
    letter_city: str = "Paris"
    # The sender's reference on the print house's order form (their customer reference for
    # CPMS), recorded in every batch's manifest.
    letter_sender_reference: str = "CPMS-SERVICE-ADHERENTS"
    # Where undeliverable letters (NPAI) come back: 2 to 4 lines separated by "|".
    letter_return_address: str = (
        "CPMS – Service Adhérents|Gestion des accès en ligne|TSA 91234|75901 PARIS CEDEX 15"
    )
    # Retention (README "Retention"): how long `purge` keeps each kind of data, in days.
    retention_unknown_nir_days: int = _bounded(180, 1, 3650, "days")  # since the last failure
    retention_mail_files_days: int = _bounded(1, 1, 90, "days")  # `.eml` files in mail_dir
    retention_batch_files_days: int = _bounded(30, 1, 365, "days")  # a printed batch's files
    retention_closed_members_days: int = _bounded(730, 30, 3650, "days")  # then pseudonymised
    retention_audit_days: int = _bounded(365, 180, 3650, "days")  # then archived and dropped
    # Where `purge` archives old audit events; unset: `audit-archive` beside the database.
    audit_archive_dir: str | None = field(default=None, metadata={"path": True})

    def __post_init__(self) -> None:
        check_settings({f.name: getattr(self, f.name) for f in fields(self)}, env_name)

    @property
    def outbox(self) -> Path:
        """Where `.eml` files go without SMTP (and where `purge` looks for them)."""
        return self._beside_database(self.mail_dir, "outbox")

    @property
    def audit_archive(self) -> Path:
        return self._beside_database(self.audit_archive_dir, "audit-archive")

    def _beside_database(self, given: str | None, name: str) -> Path:
        """`given`, else the directory `name` beside a SQLite database file, wherever the
        command runs from (as the pepper: e-mails written from another working directory
        would escape `purge`); `data/<name>` for another database."""
        if given:
            return Path(given)
        from cpms_admin.db import sqlite_path

        database = sqlite_path(self.database_url)
        return database.parent / name if database is not None else Path("data") / name


# (larger, smaller): the first setting must be at least the second.
_AT_LEAST = (
    ("lockout_hard_after", "lockout_max_failures"),
    ("lockout_cooldown_cap_seconds", "lockout_cooldown_seconds"),
)


def env_name(name: str) -> str:
    return f"CPMS_{name.upper()}"


def check_settings(values: Mapping[str, Any], label: Callable[[str], str]) -> None:
    """Refuse (NotReady) an integer setting out of its bounds or out of order with another;
    `label` names a setting as the user wrote it."""
    for spec in fields(Settings):
        if "bounds" not in spec.metadata:
            continue
        low, high = spec.metadata["bounds"]
        unit = f" ({spec.metadata['unit']})" if spec.metadata["unit"] else ""
        value = values[spec.name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise NotReady(
                f"{label(spec.name)} must be a whole number between {low} and {high}{unit}, "
                f"got {reprlib.repr(value)}"
            )
        if not low <= value <= high:
            raise NotReady(
                f"{label(spec.name)} must be between {low} and {high}{unit}, "
                f"got {reprlib.repr(value)}"
            )
    _check_texts_are_text(values, label)
    _check_database_url(values.get("database_url"), label)
    _check_texts_given(values, label)
    _check_mail_from(values["mail_from"], label)
    _check_portal_url(values["portal_url"], label)
    _check_return_address(values.get("letter_return_address"), label)
    _check_printed(values, label)
    for larger, smaller in _AT_LEAST:
        if values[larger] < values[smaller]:
            raise NotReady(
                f"{label(larger)} ({values[larger]}) must be at least "
                f"{label(smaller)} ({values[smaller]})"
            )


def _check_texts_are_text(values: Mapping[str, Any], label: Callable[[str], str]) -> None:
    """A text setting written in the config file as a list or a number (`weak_pins =
    ["135792"]`) would be read as the text of its Python form, and match nothing."""
    for spec in fields(Settings):
        value = values.get(spec.name)
        if "bounds" not in spec.metadata and value is not None and not isinstance(value, str):
            what = "a list" if isinstance(value, list) else type(value).__name__
            raise NotReady(
                f"{label(spec.name)} must be text in quotes, got {what}: "
                + ('write "a,b,c"' if spec.name == "weak_pins" else "quote the value")
            )


def _check_texts_given(values: Mapping[str, Any], label: Callable[[str], str]) -> None:
    """A text setting with a default is never empty: `CPMS_LETTER_CITY=` in a cron file would
    print "None, le ..." on a night's letters, an empty sender would fail every e-mail."""
    for spec in fields(Settings):
        if not isinstance(spec.default, str) or spec.name == "database_url":  # checked apart
            continue
        value = values.get(spec.name)
        if not isinstance(value, str) or not value.strip():
            raise NotReady(
                f"{label(spec.name)} is empty: give a value, or leave it unset for the "
                f"default ({spec.default!r})"
            )


def _check_mail_from(value: str, label: Callable[[str], str]) -> None:
    """One sender, its address in ASCII (no SMTPUTF8 here): every e-mail would fail with it."""
    from email.utils import getaddresses, parseaddr

    address = parseaddr(value)[1]
    senders = getaddresses([value])
    one = len(senders) == 1 and senders[0][1] == address
    if "\r" in value or "\n" in value or "@" not in address or not address.isascii() or not one:
        raise NotReady(
            f"{label('mail_from')} must be one sender, such as `CPMS <ne-pas-repondre@cpms.fr>` "
            f"(the address in ASCII), got {reprlib.repr(value)}"
        )


def _check_portal_url(value: str, label: Callable[[str], str]) -> None:
    """The link every code e-mail and letter gives: a web address (a line break would split
    the e-mail's text, `javascript:` or a bare host would make a link that does not work)."""
    from urllib.parse import urlsplit

    from cpms_admin.audit import unprintable  # the one definition; audit sits above settings

    try:
        parts = urlsplit(value.strip())
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("https", "http")
        or not parts.hostname
        or any(char.isspace() for char in value.strip())
        or unprintable(value)
    ):
        raise NotReady(
            f"{label('portal_url')} must be the portal's web address, such as "
            f"https://adherent.cpms.fr, got {reprlib.repr(value)}"
        )


RETURN_ADDRESS_LINES = (2, 4)  # a name and a postcode-and-city line at least; the window's 4
RETURN_ADDRESS_LINE = 38  # characters, as any AFNOR address line


def _check_database_url(value: Any, label: Callable[[str], str]) -> None:
    """A URL SQLAlchemy can read; never echoed, as it may hold a password. (An empty variable,
    common in cron files, would otherwise fail deep inside the first command.)"""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = f"such as {DEFAULT_DATABASE_URL} or postgresql://user@host/cpms"
    if not isinstance(value, str) or not value.strip():
        raise NotReady(f"{label('database_url')} is empty: give a database URL, {example}")
    try:
        parsed = make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        if ":" not in value and "@" not in value:  # a file's path: no password to hide
            raise NotReady(
                f"{label('database_url')} is not a database URL: for a SQLite file, give "
                f"sqlite:///{value.strip()}"
            ) from None
        raise NotReady(f"{label('database_url')} is not a database URL ({example})") from None
    if parsed.host and "@" in parsed.host:  # `user:p@ss@host`: the rest would show as a host
        raise NotReady(
            f"{label('database_url')} holds an '@' between the password and the host: write "
            "an '@' inside the password as %40"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.host:  # `sqlite://data/cpms.db`
        path = "/".join(part for part in (parsed.host, parsed.database) if part)
        raise NotReady(
            f"{label('database_url')} names a host, which SQLite has not: for the file "
            f"{path} give sqlite:///{path} (three slashes; four before an absolute path)"
        )


def return_address_lines(value: str) -> tuple[str, ...]:
    """The return address setting as printed lines (letters/zones.py: the return window): one
    per `|` or line break, 2 to 4, each at most 38 characters. ValueError saying why."""
    lines = tuple(" ".join(line.split()) for line in value.replace("\n", "|").split("|"))
    lines = tuple(line for line in lines if line)
    low, high = RETURN_ADDRESS_LINES
    if not low <= len(lines) <= high:
        raise ValueError(f"must have {low} to {high} lines separated by '|', got {len(lines)}")
    from cpms_admin.audit import unprintable  # the one definition; audit sits above settings

    for line in lines:
        if hidden := unprintable(line):
            raise ValueError(hidden)
        if len(line) > RETURN_ADDRESS_LINE:
            raise ValueError(
                f"line {line!r} is {len(line)} characters, at most {RETURN_ADDRESS_LINE}"
            )
    return lines


# Printed on every letter (the date line's place) or on the print house's order form.
_PRINTED = ("letter_city", "letter_sender_reference")


def _check_printed(values: Mapping[str, Any], label: Callable[[str], str]) -> None:
    """A control or invisible character would print as it does in a name (`Pa\\u202eris`
    reverses the date line) or break the order form's line."""
    from cpms_admin.audit import unprintable  # the one definition; audit sits above settings

    for name in _PRINTED:
        if isinstance(value := values.get(name), str) and (hidden := unprintable(value)):
            raise NotReady(f"{label(name)} {value!r}: {hidden}")


def _check_return_address(value: Any, label: Callable[[str], str]) -> None:
    try:
        return_address_lines(value if isinstance(value, str) else "")
    except ValueError as exc:
        raise NotReady(f"{label('letter_return_address')} {exc}") from None


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def _coerce(raw: Any, *, integer: bool) -> Any:
    """An environment string (or a TOML value) as the field's type. A string that is not a
    whole number is kept as it is, for `check_settings` to refuse naming the setting."""
    if not integer:  # a TOML list or number stays as it is, for `check_settings` to refuse
        return None if raw == "" else raw
    if isinstance(raw, str):  # digits only: int() also takes `3_0` (30), `+3` and `٣`
        text = raw.strip()
        return int(text) if _WHOLE_NUMBER.fullmatch(text) else raw
    return raw


def _read_config(path: str) -> dict[str, Any]:
    import tomllib  # only when a config file is named: most runs have none

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise NotReady(f"cannot read config file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NotReady(f"cannot read config file {path}: {exc}") from None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    named: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from a config file, the environment and explicit overrides;
    `named` gives the overrides' names in messages (a command-line option's)."""
    env = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    config_path = env.get("CPMS_CONFIG")
    if config_path:
        from_file = _read_config(config_path)
        unknown = sorted(set(from_file) - set(known))
        if unknown:
            raise NotReady(
                f"unknown {noun(len(unknown), 'setting')} in {config_path}: {', '.join(unknown)}"
            )
        if "pepper" in from_file:  # read by whoever may read settings, checked by nobody
            raise NotReady(
                f"pepper in {config_path}: keep the pepper out of the config file, in a file of "
                "its own (pepper_file), which cpms-admin checks is private"
            )
        values.update(from_file)
        labels.update({name: _in_config(name, config_path) for name in from_file})
    for name, spec in known.items():
        raw = _from_environment(env, spec)
        if raw is not None:
            values[name], labels[name] = raw, env_name(name)
    given = {name: value for name, value in overrides.items() if value is not None}
    values.update(given)
    labels.update({name: (named or {}).get(name, name) for name in given})
    coerced = {
        name: _coerce(value, integer="bounds" in known[name].metadata)
        for name, value in values.items()
    }
    defaults = {name: spec.default for name, spec in known.items()}
    check_settings({**defaults, **coerced}, lambda name: labels.get(name, env_name(name)))
    return Settings(**coerced)


def written_as(name: str, environ: Mapping[str, str] | None = None) -> str:
    """How the operator wrote the setting `name`, which is set: its variable, or the config
    file's key when no variable sets it (the environment wins, as `load_settings` reads
    them). For a message about a value found wrong after loading."""
    env = os.environ if environ is None else environ
    config_path = env.get("CPMS_CONFIG")
    spec = next(spec for spec in fields(Settings) if spec.name == name)
    if config_path and _from_environment(env, spec) is None:
        return _in_config(name, config_path)
    return env_name(name)


def _from_environment(env: Mapping[str, str], spec: Field[Any]) -> str | None:
    """The value the environment gives the setting `spec`, if it gives one."""
    raw = env.get(env_name(spec.name))
    if raw == "" and spec.metadata.keys() & {"bounds", "path"}:
        return None  # an empty number or path variable is unset, as Click reads its own
    return raw


def _in_config(name: str, config_path: str) -> str:
    return f"{name} in {config_path}"


def templates_dir() -> Path:
    """`cpms_admin/templates` in a wheel install, `templates/` beside the package otherwise."""
    for candidate in (_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates"):
        if (candidate / "letters").is_dir():
            return candidate
    raise NotReady("templates not found: reinstall cpms-admin (pip install .)")
