"""`doctor`: is everything the nightly job needs in place? Each check says what to fix."""

import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpms_admin.errors import CpmsError, InvalidInput, NotReady, unreachable
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.settings import Settings, written_as
from cpms_admin.vocabulary import Wording

if TYPE_CHECKING:
    from cpms_admin.pepper import Peppers

LETTER_FILES = (*(f"{wording}.html" for wording in Wording), "letter.css")
MAIL_FILES = (
    "security_code.txt.j2",
    "security_code.html.j2",
    "pin_changed.txt.j2",
    "pin_changed.html.j2",
)
FONTS = ("Liberation Sans", "DejaVu Sans")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
            "status": "ok" if self.ok else "PROBLEM",
        }


def _schema_revision(settings: Settings) -> str | None:
    """The database's schema revision, None before the first `db upgrade`."""
    from cpms_admin.db import current_revision, make_engine, release

    engine = make_engine(settings.database_url)
    try:
        return current_revision(engine)
    finally:
        release(engine)


def check_database(settings: Settings) -> Check:
    # First: a -wal file this user may not write keeps them from even reading the database.
    unwritable = _unwritable(settings)
    if unwritable is not None:
        return Check(
            "database",
            False,
            f"{unwritable} is not writable by this user: every command that changes something "
            "(the nightly batch, mail send) would fail",
            f"give this user write access to {unwritable} (README, Deploying: the database's "
            "group), or check that it is not immutable (lsattr)",
        )
    revision = _schema_revision(settings)
    if revision != HEAD_REVISION:
        from cpms_admin.db import schema_behind

        what, fix = schema_behind(revision)
        return Check("database", False, f"schema {what}", fix)
    folder = _open_folder(settings)
    if folder is not None:
        return Check(
            "database",
            False,
            f"its folder {folder} is writable by every user: another could plant or hold the "
            "files kept beside the database (its pepper, the batch and mail locks)",
            f"move the database to a folder of its own, or chmod o-w {folder}",
        )
    readable = _readable_by_all(settings)
    if readable is not None:
        return Check(
            "database",
            False,
            f"{readable} is readable by every user: the members' names, addresses and NIRs "
            "are open to any account on this machine (a backup restored with its mode lost)",
            f"chmod o-rwx {readable} (README, Deploying: the database's group)",
        )
    return Check("database", True, f"reachable, schema at {revision}")


def _unwritable(settings: Settings) -> Path | None:
    """A SQLite database file, its -wal and -shm files, or its folder (where SQLite makes
    them), that this user may not write: a restored backup's mode, an immutable file, the
    -wal file left by another user's run."""
    import os

    from cpms_admin.db import sqlite_path
    from cpms_admin.private_files import absolute

    database = sqlite_path(settings.database_url)
    if database is None:
        return None
    database = absolute(database)
    files = [database.with_name(database.name + end) for end in ("", "-wal", "-shm")]
    wanted = [(path, os.W_OK) for path in files] + [(database.parent, os.W_OK | os.X_OK)]
    # What does not exist is another check's: a missing database is said as such.
    return next((p for p, access in wanted if os.path.exists(p) and not os.access(p, access)), None)


def _open_folder(settings: Settings) -> Path | None:
    """A SQLite database's folder, when every user may create files in it (/tmp, /var/tmp)."""
    from cpms_admin.db import sqlite_path
    from cpms_admin.private_files import absolute

    database = sqlite_path(settings.database_url)
    if database is None:
        return None
    folder = absolute(database).parent
    try:
        mode = folder.stat().st_mode
    except OSError:
        return None
    return folder if mode & stat.S_IWOTH else None


def _readable_by_all(settings: Settings) -> Path | None:
    """A SQLite database file, or its -wal or -shm file, that every user may read in a folder
    every user may enter (`db upgrade` makes them private; a copy or a restore may not)."""
    from cpms_admin.db import sqlite_path
    from cpms_admin.private_files import absolute

    database = sqlite_path(settings.database_url)
    if database is None:
        return None
    database = absolute(database)
    try:
        if not database.parent.stat().st_mode & stat.S_IXOTH:
            return None
    except OSError:
        return None
    for path in (database.with_name(database.name + end) for end in ("", "-wal", "-shm")):
        try:
            if path.stat().st_mode & stat.S_IROTH:
                return path
        except OSError:
            continue  # no -wal file between runs: nothing to read
    return None


def check_pepper(settings: Settings) -> Check:
    """The pepper is this database's (its fingerprint matches) and private."""
    from cpms_admin.pepper import (
        FINISH_ROTATION,
        UNFINISHED_ROTATION,
        load_peppers,
        pepper_file_path,
        pepper_file_problem,
    )

    path = pepper_file_path(settings)
    if path is not None and not path.exists() and _no_schema_yet(settings):
        return Check(
            "pepper",
            False,
            f"no pepper file yet at {path}",
            "run cpms-admin db upgrade: it creates the pepper with the database",
        )
    problem = pepper_file_problem(path) if path is not None else None
    if problem:  # before reading it, which would refuse it: the fix on its own
        return Check("pepper", False, *problem)
    peppers = load_peppers(settings)
    if lost := _lost_peppers(settings, peppers):
        return Check(
            "pepper",
            False,
            f"{peppers.source} no longer holds {lost}: a PIN, code or audit event made with "
            "it cannot be checked, and unknown NIRs' counters made with it start afresh",
            "put its line back, from the backup of the pepper file",
        )
    if peppers.unrecorded is not None:
        unfinished = UNFINISHED_ROTATION.format(peppers.source, peppers.unrecorded)
        return Check("pepper", False, unfinished, FINISH_ROTATION)
    which = f"pepper {peppers.current_id} of {len(peppers.secrets)}, this database's"
    if path is None:
        return Check("pepper", True, f"from CPMS_PEPPER, {which}")
    return Check("pepper", True, f"{path}, private, {which}")


def _lost_peppers(settings: Settings, peppers: "Peppers") -> str | None:
    """The peppers that still key something (`pepper status`) and are no longer at hand, in
    words; None when none is (or the schema is not the latest: the database check says)."""
    from cpms_admin.clock import system_clock
    from cpms_admin.db import make_engine, release, session_scope
    from cpms_admin.english import count
    from cpms_admin.operations.peppers import usage

    if _schema_revision(settings) != HEAD_REVISION:
        return None
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine, read_only=True) as session:
            uses = usage(session, now=system_clock())
    finally:
        release(engine)
    lost = [use for use in uses if use.key_id not in peppers.secrets and not use.removable]
    unknown = ("unknown NIR's counters", "unknown NIRs' counters")
    return (
        ", ".join(
            f"pepper {use.key_id} (still keying {count(use.pin_hashes, 'PIN hash', 'PIN hashes')}, "
            f"{count(use.live_codes, 'live code')}, {count(use.audit_events, 'audit event')}, "
            f"{count(use.unknown_nir_counters, *unknown)})"
            for use in lost
        )
        or None
    )


def _no_schema_yet(settings: Settings) -> bool:
    """A database `db upgrade` has not made yet: a missing pepper is then no loss."""
    from cpms_admin.db import sqlite_path

    database = sqlite_path(settings.database_url)
    if database is not None and not database.exists():
        return True
    try:
        return _schema_revision(settings) is None
    except CpmsError:
        return False


def check_templates(settings: Settings) -> Check:
    from cpms_admin.settings import templates_dir

    root = templates_dir()
    expected = [root / "letters" / f for f in LETTER_FILES] + [
        root / "mail" / f for f in MAIL_FILES
    ]
    missing = [str(path) for path in expected if not path.is_file()]
    if missing:
        return Check("templates", False, f"missing: {', '.join(missing)}", "reinstall cpms-admin")
    return Check("templates", True, str(root))


def check_fonts(settings: Settings) -> Check:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return Check(
            "fonts",
            False,
            "fontconfig (fc-list) not found",
            "apt-get install fontconfig fonts-liberation2",
        )
    listed = subprocess.run(
        [fc_list, ":", "family"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    found = [font for font in FONTS if font in listed]
    if not found:
        return Check(
            "fonts",
            False,
            f"none of {', '.join(FONTS)} installed",
            "apt-get install fonts-liberation2 fonts-dejavu-core",
        )
    return Check("fonts", True, ", ".join(found))


def check_weasyprint(settings: Settings) -> Check:
    try:
        from weasyprint.text.ffi import harfbuzz, harfbuzz_subset
    except (ImportError, OSError) as exc:
        return Check(
            "weasyprint",
            False,
            f"cannot load WeasyPrint: {exc}",
            "apt-get install libpango-1.0-0 libpangoft2-1.0-0",
        )
    if harfbuzz_subset is None or not harfbuzz.hb_version_atleast(4, 1, 0):
        return Check(
            "weasyprint",
            False,
            "HarfBuzz subsetting unavailable: fonts fall back to fontTools, several times slower",
            "apt-get install libharfbuzz-subset0",
        )
    return Check("weasyprint", True, "HarfBuzz font subsetting in use")


def check_letters(settings: Settings) -> Check:
    """What the letters print from the settings fits its place (else the batch refuses)."""
    from cpms_admin.letters.pdf import zones

    if zones.address_font() is None:  # addresses are measured with it
        return Check("letters", False, zones.FONT_MISSING, zones.FONT_FIX)
    try:
        lines = zones.letterhead(settings)
    except NotReady as exc:
        return Check("letters", False, str(exc), "shorten the setting it names")
    return Check(
        "letters", True, f"return address ({len(lines)} lines) and date line fit their places"
    )


def check_mail(settings: Settings) -> Check:
    if not settings.smtp_url:
        return _check_outbox(settings.outbox)
    from cpms_admin.mail.transport import smtp_problem

    problem = smtp_problem(settings)
    if problem:
        return Check("mail", False, problem, f"check {written_as('smtp_url')} and the mail server")
    return Check("mail", True, "SMTP server answers")


def _check_outbox(directory: Path) -> Check:
    """Without SMTP, e-mails are files: this user must be able to write them, else every code
    e-mail fails (and the portal's only after answering the member)."""
    from cpms_admin.private_files import check_writable

    try:
        check_writable(directory)
    except InvalidInput as exc:
        return Check(
            "mail",
            False,
            f"no SMTP configured, and e-mails cannot be written to {directory}/: {exc}",
            "give the folder the database's group and mode (chgrp, chmod 2770), "
            "or set CPMS_MAIL_DIR or CPMS_SMTP_URL",
        )
    return Check("mail", True, f"no SMTP configured: e-mails are written to {directory}/")


def check_audit_archive(settings: Settings) -> Check:
    """`purge` moves the audit events past their retention into this folder: a folder it
    cannot write in is found the night the first events are old enough, a year on."""
    from cpms_admin.private_files import check_writable

    directory = settings.audit_archive
    try:
        check_writable(directory)
    except InvalidInput as exc:
        return Check(
            "audit_archive",
            False,
            f"purge cannot archive old audit events in {directory}/: {exc}",
            "give the folder the database's group and mode (chgrp, chmod 2770), "
            "or set CPMS_AUDIT_ARCHIVE_DIR",
        )
    return Check("audit_archive", True, f"purge archives old audit events in {directory}/")


CHECKS: tuple[Callable[[Settings], Check], ...] = (
    check_database,
    check_pepper,
    check_templates,
    check_fonts,
    check_weasyprint,
    check_letters,
    check_mail,
    check_audit_archive,
)


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        """5 (not ready) when anything needs fixing."""
        return 0 if all(check.ok for check in self.checks) else NotReady.exit_code


def run_checks(settings: Settings) -> Report:
    results = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check(settings))
        except CpmsError as exc:
            results.append(Check(name, False, str(exc)))
        except PermissionError as exc:  # the other checks still tell what they find
            results.append(Check(name, False, str(unreachable(exc))))
    return Report(results)
