"""Bounded input: a setting out of its bounds is refused (exit 5) naming it as the user wrote
it, help never needs configuration, and a `--limit` too large is a usage error (exit 2)."""

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from cpms_admin.errors import NotReady
from cpms_admin.settings import LIMIT_MAX, Settings, load_settings
from tests.harness import COMMAND, Cli, invoke

UNSET: dict[str, str | None] = {f"CPMS_{f.name.upper()}": None for f in fields(Settings)}


def run(*args: str, **env: str) -> Any:
    """The CLI with no setting but `env` (a variable given as None is removed)."""
    environ = {**UNSET, "CPMS_CONFIG": None, "CPMS_AGENT": "agent.test", **env}
    return invoke(args, env=environ)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CPMS_LOCKOUT_COOLDOWN_SECONDS": "-600"},
            "CPMS_LOCKOUT_COOLDOWN_SECONDS must be between 1 and 86400 (seconds), got -600",
        ),
        (
            {"CPMS_CODE_EMAIL_TTL_MINUTES": "-10"},
            "CPMS_CODE_EMAIL_TTL_MINUTES must be between 1 and 1440 (minutes), got -10",
        ),
        (
            {"CPMS_LOCKOUT_MAX_FAILURES": "abc"},
            "CPMS_LOCKOUT_MAX_FAILURES must be a whole number between 1 and 100, got 'abc'",
        ),
        (
            {"CPMS_LOCKOUT_MAX_FAILURES": "3_0"},  # int() reads 30
            "CPMS_LOCKOUT_MAX_FAILURES must be a whole number between 1 and 100, got '3_0'",
        ),
        (
            {"CPMS_LOCKOUT_MAX_FAILURES": "٣"},  # an Arabic-Indic 3, which int() reads too
            "CPMS_LOCKOUT_MAX_FAILURES must be a whole number between 1 and 100, got '٣'",
        ),
        (
            {"CPMS_CODE_POST_TTL_DAYS": "99999999999999999999"},
            "CPMS_CODE_POST_TTL_DAYS must be between 1 and 365 (days), got 99999999999999999999",
        ),
        (
            {"CPMS_CODE_REQUESTS_PER_DAY": "0"},
            "CPMS_CODE_REQUESTS_PER_DAY must be between 1 and 100, got 0",
        ),
        (
            {"CPMS_SMTP_TIMEOUT_SECONDS": "301"},
            "CPMS_SMTP_TIMEOUT_SECONDS must be between 1 and 300 (seconds), got 301",
        ),
        (
            {"CPMS_SMTP_DEADLINE_SECONDS": "2.5"},
            "CPMS_SMTP_DEADLINE_SECONDS must be a whole number between 1 and 600 (seconds), "
            "got '2.5'",
        ),
        (
            {"CPMS_LOCKOUT_HARD_AFTER": "2"},
            "CPMS_LOCKOUT_HARD_AFTER (2) must be at least CPMS_LOCKOUT_MAX_FAILURES (3)",
        ),
        (
            {"CPMS_LOCKOUT_COOLDOWN_SECONDS": "600", "CPMS_LOCKOUT_COOLDOWN_CAP_SECONDS": "300"},
            "CPMS_LOCKOUT_COOLDOWN_CAP_SECONDS (300) must be at least "
            "CPMS_LOCKOUT_COOLDOWN_SECONDS (600)",
        ),
        (
            {"CPMS_DATABASE_URL": ""},  # an empty variable in a cron file
            "CPMS_DATABASE_URL is empty: give a database URL, such as sqlite:///data/cpms.db "
            "or postgresql://user@host/cpms",
        ),
        (
            {"CPMS_LETTER_CITY": ""},  # would print "None, le 6 décembre 2026" on letters
            "CPMS_LETTER_CITY is empty: give a value, or leave it unset for the default ('Paris')",
        ),
        (  # printed on every letter's date line: "Pa6202 erbmecéd 8 el ,sir"
            {"CPMS_LETTER_CITY": "Pa\u202eris"},
            "CPMS_LETTER_CITY 'Pa\\u202eris': invisible characters are not allowed (U+202E, "
            "RIGHT-TO-LEFT OVERRIDE)",
        ),
        (  # on the print house's order form, in every batch's manifest
            {"CPMS_LETTER_SENDER_REFERENCE": "CPMS\nX"},
            "CPMS_LETTER_SENDER_REFERENCE 'CPMS\\nX': control characters are not allowed",
        ),
        (
            {"CPMS_LETTER_RETURN_ADDRESS": "CPMS|TSA\u200b 91234|75901 PARIS CEDEX 15"},
            "CPMS_LETTER_RETURN_ADDRESS invisible characters are not allowed (U+200B, ZERO "
            "WIDTH SPACE)",
        ),
        (
            {"CPMS_MAIL_FROM": "  "},  # every e-mail would fail
            "CPMS_MAIL_FROM is empty: give a value, or leave it unset for the default "
            "('CPMS Espace Adhérent <ne-pas-repondre@cpms.fr>')",
        ),
        (
            {"CPMS_MAIL_FROM": "a@cpms.fr\nBcc: b@c.fr"},  # a header slipped in
            "CPMS_MAIL_FROM must be one sender, such as `CPMS <ne-pas-repondre@cpms.fr>` (the "
            "address in ASCII), got 'a@cpms.fr\\nBcc: b@c.fr'",
        ),
        (
            {"CPMS_MAIL_FROM": "é@é"},  # no server takes it: every e-mail failed, with a traceback
            "CPMS_MAIL_FROM must be one sender, such as `CPMS <ne-pas-repondre@cpms.fr>` (the "
            "address in ASCII), got 'é@é'",
        ),
        (
            {"CPMS_MAIL_FROM": "CPMS <a@cpms.fr>,"},  # written as it came: `From: ... <a@cpms.fr>,`
            "CPMS_MAIL_FROM must be one sender, such as `CPMS <ne-pas-repondre@cpms.fr>` (the "
            "address in ASCII), got 'CPMS <a@cpms.fr>,'",
        ),
        *(
            (  # the link of every code e-mail and letter: split, a script, or no link at all
                {"CPMS_PORTAL_URL": url},
                "CPMS_PORTAL_URL must be the portal's web address, such as "
                f"https://adherent.cpms.fr, got {url!r}",
            )
            for url in ("https://x.fr\nBcc: y", "javascript:alert(1)", "adherent.cpms.fr")
        ),
        (
            {"CPMS_DATABASE_URL": "postgresql://cpms@db:abc/cpms"},  # a port that is no number
            "CPMS_DATABASE_URL is not a database URL (such as sqlite:///data/cpms.db or "
            "postgresql://user@host/cpms)",
        ),
        (
            {"CPMS_DATABASE_URL": "cpms.db"},  # a file's path: the URL for it
            "CPMS_DATABASE_URL is not a database URL: for a SQLite file, give sqlite:///cpms.db",
        ),
        (
            {"CPMS_DATABASE_URL": "/srv/cpms/cpms.db"},
            "CPMS_DATABASE_URL is not a database URL: for a SQLite file, give "
            "sqlite:////srv/cpms/cpms.db",
        ),
        (  # read at start: found at sending, it failed `pin reset` after the reset
            {"CPMS_SMTP_URL": "smtp://u:hunter2@127.0.0.1:99999"},
            "invalid CPMS_SMTP_URL: bad port number",
        ),
        (  # the password's second half read as the host, and printed in the error
            {"CPMS_DATABASE_URL": "postgresql://cpms:p@S3CRET@127.0.0.1/cpms"},
            "CPMS_DATABASE_URL holds an '@' between the password and the host: write an '@' "
            "inside the password as %40",
        ),
        (  # two slashes: SQLAlchemy reads `data` as a host, and opened ./cpms.db
            {"CPMS_DATABASE_URL": "sqlite://data/cpms.db"},
            "CPMS_DATABASE_URL names a host, which SQLite has not: for the file data/cpms.db "
            "give sqlite:///data/cpms.db (three slashes; four before an absolute path)",
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_it(env: dict[str, str], message: str) -> None:
    result = run("member", "list", **env)
    assert (result.exit_code, result.stderr) == (5, f"Error: {message}\n")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "lockout_cooldown_seconds = -600",
            "lockout_cooldown_seconds in {config} must be between 1 and 86400 (seconds), got -600",
        ),
        (
            'portal_url = ""',
            "portal_url in {config} is empty: give a value, or leave it unset for the default "
            "('https://adherent.cpms.fr')",
        ),
        (
            "lockout_max_failures = true",
            "lockout_max_failures in {config} must be a whole number between 1 and 100, got True",
        ),
        (  # read as the text "['135792']", it matched no PIN, and the defaults were gone
            'weak_pins = ["135792"]',
            'weak_pins in {config} must be text in quotes, got a list: write "a,b,c"',
        ),
        (
            "letter_city = 75",
            "letter_city in {config} must be text in quotes, got int: quote the value",
        ),
        (  # checked as every command starts, by the mail package: named as the others are
            'smtp_url = "smtps://mail.example?starttls=1"',
            "invalid smtp_url in {config}: smtps:// is already TLS, drop ?starttls=1",
        ),
        (  # read by whoever reads the settings, its privacy checked by nobody
            'pepper = "a-secret-in-a-file-others-read"',
            "pepper in {config}: keep the pepper out of the config file, in a file of its own "
            "(pepper_file), which cpms-admin checks is private",
        ),
    ],
)
def test_a_bad_config_file_value_is_named_by_its_key(
    tmp_path: Path, line: str, message: str
) -> None:
    config = tmp_path / "cpms.toml"
    config.write_text(f"{line}\n", encoding="utf-8")
    result = run("member", "list", CPMS_CONFIG=str(config))
    assert (result.exit_code, result.stderr) == (5, f"Error: {message.format(config=config)}\n")


def test_unknown_keys_and_unreadable_files_are_not_ready(tmp_path: Path) -> None:
    config = tmp_path / "cpms.toml"
    config.write_text("lockout_max_failure = 3\n", encoding="utf-8")
    unknown = run("member", "list", CPMS_CONFIG=str(config))
    assert (unknown.exit_code, unknown.stderr) == (
        5,
        f"Error: unknown setting in {config}: lockout_max_failure\n",
    )
    missing = run("member", "list", CPMS_CONFIG=str(tmp_path / "nope.toml"))
    assert missing.exit_code == 5
    assert f"cannot read config file {tmp_path / 'nope.toml'}" in missing.stderr
    config.write_bytes(b"\xff\xfe")
    assert run("member", "list", CPMS_CONFIG=str(config)).exit_code == 5


@pytest.mark.parametrize(
    ("url", "problem"), [("", "is empty"), ("postgresql:/me:s3cret@db", "is not a database URL")]
)
def test_a_bad_db_option_is_named_as_typed_and_never_echoed(url: str, problem: str) -> None:
    result = run("--db", url, "member", "list", CPMS_DATABASE_URL="sqlite:///elsewhere.db")
    assert result.exit_code == 5
    assert result.stderr.startswith(f"Error: --db {problem}")
    assert "s3cret" not in result.output


def test_the_environment_wins_over_the_file_and_empty_means_unset(tmp_path: Path) -> None:
    config = tmp_path / "cpms.toml"
    config.write_text("lockout_cooldown_seconds = -600\ncode_max_tries = 7\n", encoding="utf-8")
    loaded = load_settings(
        {"CPMS_CONFIG": str(config), "CPMS_LOCKOUT_COOLDOWN_SECONDS": " 90 ", "CPMS_SMTP_URL": ""}
    )
    assert (loaded.lockout_cooldown_seconds, loaded.code_max_tries) == (90, 7)
    assert load_settings({"CPMS_CODE_EMAIL_TTL_MINUTES": ""}).code_email_ttl_minutes == 10
    # An empty path is unset too: the file's outbox holds, not one beside the database. An
    # empty SMTP URL still means none: blanking it must never send real e-mails instead.
    config.write_text(
        'mail_dir = "/srv/mail"\npepper_file = "/etc/cpms/pepper"\n'
        'smtp_url = "smtp://mail.example.invalid"\n'
    )
    environ = {"CPMS_CONFIG": str(config), "CPMS_MAIL_DIR": "", "CPMS_PEPPER_FILE": ""}
    loaded = load_settings({**environ, "CPMS_SMTP_URL": ""})
    assert (loaded.mail_dir, loaded.pepper_file) == ("/srv/mail", "/etc/cpms/pepper")
    assert loaded.smtp_url is None


@pytest.mark.parametrize(
    "args", [["--help"], ["member", "--help"], ["member"], ["member", "list", "--help"]]
)
def test_help_needs_no_configuration(args: list[str]) -> None:
    result = run(*args, CPMS_LOCKOUT_MAX_FAILURES="abc", CPMS_AGENT="a\nb")
    assert result.exit_code == (2 if args == ["member"] else 0)  # a group alone: usage error
    assert "Usage: " in result.output
    assert "Error" not in result.output


def test_help_as_an_option_value_still_reports_the_setting() -> None:
    args = ["member", "close", "185057800608491", "--reason", "--help"]
    result = run(*args, CPMS_LOCKOUT_MAX_FAILURES="abc")
    assert result.exit_code == 5
    assert "CPMS_LOCKOUT_MAX_FAILURES must be a whole number" in result.stderr


def test_settings_made_in_code_are_checked_too() -> None:
    with pytest.raises(NotReady, match=r"^CPMS_LOCKOUT_COOLDOWN_SECONDS must be between"):
        Settings(lockout_cooldown_seconds=-600)
    with pytest.raises(NotReady, match=r"^CPMS_CODE_EMAIL_TTL_MINUTES must be a whole number"):
        Settings(code_email_ttl_minutes=True)
    with pytest.raises(NotReady, match=r"^CPMS_LOCKOUT_HARD_AFTER \(2\) must be at least"):
        replace(Settings(database_url="sqlite://", pepper="p"), lockout_hard_after=2)


def test_every_integer_setting_has_bounds_around_its_default() -> None:
    defaults = Settings(database_url="sqlite://", pepper="p")
    for spec in fields(Settings):
        if spec.type is int:
            low, high = spec.metadata["bounds"]
            assert low <= getattr(defaults, spec.name) <= high, spec.name
    assert (
        defaults.code_requests_per_day,
        defaults.smtp_timeout_seconds,
        defaults.smtp_deadline_seconds,
    ) == (3, 10, 20)


LIMITED = [
    ["member", "list"],
    ["audit", "list"],
    ["letters", "list"],
    ["letters", "batch", "--out", "batches", "--dry-run"],
    ["mail", "send"],
]


@pytest.mark.parametrize("command", LIMITED, ids=[" ".join(c[:2]) for c in LIMITED])
def test_a_huge_limit_is_a_usage_error(cli: Cli, command: list[str]) -> None:
    result = cli(*command, "--limit", "99999999999999999999")
    assert result.exit_code == 2
    assert "--limit" in result.output
    assert "Traceback" not in result.output
    assert cli(*command[:2], "--limit", str(LIMIT_MAX + 1)).exit_code == 2


def test_every_limit_option_is_bounded() -> None:
    def options(command: Any) -> list[Any]:
        found = [p for p in command.params if "--limit" in getattr(p, "opts", [])]
        for child in getattr(command, "commands", {}).values():
            found += options(child)
        return found

    limits = options(COMMAND)
    assert len(limits) >= 5
    assert all(p.max == LIMIT_MAX for p in limits)
