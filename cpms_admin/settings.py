"""Settings: every rule and location, read from the environment or a TOML config file.

Each field maps to `CPMS_<FIELD>` in the environment (which wins) and to `<field>` in the
file named by `CPMS_CONFIG`. Nothing here touches the database or the disk beyond that file.
"""

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cpms_admin.errors import InvalidInput

DEFAULT_DATABASE_URL = "sqlite:///data/cpms.db"


@dataclass(frozen=True)
class Settings:
    # Secrets (the pepper, passwords inside URLs) stay out of repr(), hence out of logs.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    pepper: str | None = field(default=None, repr=False)
    pepper_file: str | None = None
    smtp_url: str | None = field(default=None, repr=False)
    mail_dir: str = "data/outbox"
    mail_from: str = "CPMS Espace Adhérent <ne-pas-repondre@cpms.fr>"
    portal_url: str = "https://adherent.cpms.fr"
    lockout_max_failures: int = 3
    lockout_cooldown_seconds: int = 60
    lockout_cooldown_cap_seconds: int = 3600
    lockout_hard_after: int = 10
    code_email_ttl_minutes: int = 10
    code_post_ttl_days: int = 30
    code_max_tries: int = 5
    terms_version: str = "2026-01"
    weak_pins: str = "123456,654321,000000,111111,121212,123123,112233"
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    letter_city: str = "Paris"


def _coerce(raw: Any, target: type) -> Any:
    if target is int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"setting must be a whole number, got {raw!r}") from None
    return None if raw == "" else str(raw)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from a config file, the environment and explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = env.get("CPMS_CONFIG")
    if config_path:
        try:
            values.update(tomllib.loads(Path(config_path).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {config_path}: {exc}") from None
    known = {f.name: f for f in fields(Settings)}
    for name in known:
        key = f"CPMS_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(known)
    if unknown:
        raise InvalidInput(f"unknown setting(s) in {config_path}: {', '.join(sorted(unknown))}")
    default_types = {name: type(f.default) for name, f in known.items()}
    coerced = {
        name: _coerce(value, int if default_types[name] is int else str)
        for name, value in values.items()
    }
    return Settings(**coerced)
