"""The pepper: the server-side secret mixed into every PIN and code hash (and the digest of
the address a printed letter bore, `members.postal.lines_digest`).

It lives outside the database (CPMS_PEPPER, or a 0600 file) so that a stolen dump alone
cannot be brute-forced, and it belongs to one database:

- unset, a SQLite database's pepper is the file `pepper` beside the database file, wherever
  the command runs from; PostgreSQL needs CPMS_PEPPER or CPMS_PEPPER_FILE;
- the database records each pepper's fingerprint (a keyed hash, never the pepper) and
  `load_peppers` refuses a pepper whose fingerprint differs, so no hash is ever made or
  checked with a pepper the database does not know.

After `pepper rotate` a file holds several peppers, one per line as `<id>:<secret>` (a line
without an id is pepper 1, the only one before any rotation); the highest id is the current
one. Each hash records the id of the pepper that made it (see `pins`, `codes`). No value of a
pepper ever appears in a message. `pepper status` does not count the letters' address
digests: once their pepper is gone, the dates judge a returned letter instead.
"""

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cpms_admin.errors import Conflict, NotReady
from cpms_admin.private_files import fsync_dir, is_teams, is_trusted
from cpms_admin.settings import Settings

PEPPER_FILE_NAME = "pepper"  # beside a SQLite database file
_FINGERPRINT_LABEL = b"cpms-pepper-fingerprint-v1"


@dataclass(frozen=True)
class Peppers:
    """The peppers at hand, by id; `current_id` makes new hashes. `source` says where they
    came from, for messages (CPMS_PEPPER or a file path)."""

    secrets: Mapping[int, bytes] = field(repr=False)
    source: str
    # A pepper in the source that `pepper rotate` wrote and has not recorded, left out of
    # `secrets` (`checked_peppers`): what `doctor` and `pepper status` tell the agent.
    unrecorded: int | None = field(default=None, compare=False)

    @property
    def current_id(self) -> int:
        return max(self.secrets)

    @property
    def current(self) -> bytes:
        return self.secrets[self.current_id]

    def get(self, key_id: int) -> bytes:
        """The pepper `key_id`; NotReady when it is no longer at hand (a hash made with it
        cannot be checked: that must not count as a wrong PIN)."""
        try:
            return self.secrets[key_id]
        except KeyError:
            raise NotReady(
                f"a hash was made with pepper {key_id}, which {self.source} no longer holds: "
                "put its line back (from the backup of the pepper file)"
            ) from None

    def __hash__(self) -> int:  # cached hashers are keyed by the peppers they hold
        return hash((self.source, tuple(sorted(self.secrets.items()))))


def as_peppers(pepper: bytes | Peppers) -> Peppers:
    """A lone pepper is pepper 1, as before any rotation."""
    return pepper if isinstance(pepper, Peppers) else Peppers({1: pepper}, "the given pepper")


def tagged(key_id: int, sep: str, value: str) -> str:
    """A hash made with pepper `key_id`, tagged `k<id><sep>`; pepper 1's hashes carry no tag,
    as every hash made before the first rotation."""
    return value if key_id == 1 else f"k{key_id}{sep}{value}"


def untagged(stored: str, sep: str) -> tuple[int, str]:
    """The pepper id a stored hash was made with, and the hash without its tag."""
    if stored.startswith("k"):
        tag, found, rest = stored[1:].partition(sep)
        if found and tag.isascii() and tag.isdigit():
            return int(tag), rest
    return 1, stored


def fingerprint(secret: bytes) -> str:
    """What the database records of a pepper: a keyed hash that does not reveal it."""
    return hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def pepper_file_path(settings: Settings) -> Path | None:
    """The file the peppers are read from: None when CPMS_PEPPER holds the pepper. Beside a
    SQLite database when CPMS_PEPPER_FILE is unset; NotReady for another database."""
    if settings.pepper:
        return None
    if settings.pepper_file:
        return Path(settings.pepper_file)
    from cpms_admin.db import is_sqlite, sqlite_path

    database = sqlite_path(settings.database_url)
    if database is None:
        kind = "an in-memory SQLite" if is_sqlite(settings.database_url) else "this"
        raise NotReady(
            f"{kind} database needs CPMS_PEPPER or CPMS_PEPPER_FILE: the pepper lives beside "
            "the database file only for SQLite"
        )
    return database.parent / PEPPER_FILE_NAME


def parse_peppers(text: str, source: str) -> Peppers:
    """`<id>:<secret>` lines (a bare secret is pepper 1); NotReady when malformed or empty,
    or when a bare line among others looks like a comment (`# prod`): it would be taken for
    pepper 1. (A lone line is the pepper, whatever it begins with.)"""
    found: dict[int, bytes] = {}
    several = len([line for line in text.splitlines() if line.strip()]) > 1
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, sep, secret = line.partition(":")
        if not sep and several and line.startswith("#"):  # a note, read as pepper 1
            raise NotReady(
                f"{source}, line {number} begins with #: a pepper file holds no comments, "
                "only <id>:<pepper> lines (a pepper that begins with # is written 1:#...)"
            )
        if not sep:
            key, secret = "1", line
        if not (key.isascii() and key.isdigit() and int(key) >= 1 and secret.strip()):
            raise NotReady(f"{source}, line {number}: expected <id>:<pepper>")
        if int(key) in found:
            raise NotReady(f"{source}: pepper {int(key)} is given twice")
        found[int(key)] = secret.strip().encode("utf-8")
    if not found:
        raise NotReady(f"{source} is empty")
    return Peppers(found, source)


def pepper_given(settings: Settings) -> bool:
    """Whether a pepper is there to be read (CPMS_PEPPER, or something at the file's path: a
    link there is refused when read, never replaced by a new pepper)."""
    path = pepper_file_path(settings)
    return path is None or path.exists() or path.is_symlink()


def read_peppers(settings: Settings) -> Peppers:
    """The configured peppers, unchecked (see `load_peppers`): NotReady, naming the file
    looked for, when there are none. It never suggests a step that would make a new one."""
    if settings.pepper:
        return parse_peppers(settings.pepper, "CPMS_PEPPER")
    path = pepper_file_path(settings)
    assert path is not None
    try:
        text = _read_pepper_file(path)
    except FileNotFoundError:
        raise NotReady(
            f"no pepper: {path} does not exist. Restore this database's pepper file there "
            "(or point CPMS_PEPPER_FILE at it); a database that does not hold hashes yet gets "
            "one from cpms-admin db upgrade"
        ) from None
    except OSError as exc:
        raise NotReady(f"cannot read pepper file {path}: {exc.strerror or exc}") from None
    return parse_peppers(text, f"pepper file {path}")


def load_peppers(settings: Settings) -> Peppers:
    """The configured peppers, checked against the fingerprints the database recorded:
    NotReady, saying what to do, when they are not this database's. A pepper `pepper rotate`
    has written but not recorded yet (`_rotation_pending`) is left out: the rotation is
    running, or was interrupted, and the peppers before it still make and check every hash.
    Read once per process and file version (a rotation changes the file), but read again
    while a rotation is pending: its pepper is current once recorded."""
    path = None if settings.pepper else pepper_file_path(settings)
    try:
        version = _stat_signature(path) if path else None
    except OSError:
        version = None  # read_peppers says what is wrong with it
    if (known := _CHECKED.get((settings, version))) is not None:
        return known
    peppers = checked_peppers(read_peppers(settings), recorded_fingerprints(settings.database_url))
    if peppers.unrecorded is None:
        if len(_CHECKED) >= 16:
            _CHECKED.clear()
        _CHECKED[(settings, version)] = peppers
    return peppers


_CHECKED: dict[tuple[Settings, tuple[int, int, int] | None], Peppers] = {}


def checked_peppers(peppers: Peppers, recorded: Mapping[int, str]) -> Peppers:
    """`peppers` checked against the database's record (`check_fingerprints`), without the
    one `pepper rotate` wrote and has not recorded yet, if any (`_rotation_pending`), named in
    `unrecorded`."""
    pending = _rotation_pending(peppers, recorded)
    if pending is not None:
        kept = {key_id: secret for key_id, secret in peppers.secrets.items() if key_id != pending}
        peppers = Peppers(kept, peppers.source, unrecorded=pending)
    check_fingerprints(peppers, recorded)
    return peppers


UNFINISHED_ROTATION = (
    "{} holds pepper {}, not recorded yet: a pepper rotate is running, or was interrupted "
    "(the commands use the peppers before it)"
)
FINISH_ROTATION = (
    "run cpms-admin pepper rotate again once no rotation runs: it finishes the one interrupted"
)


def _rotation_pending(peppers: Peppers, recorded: Mapping[int, str]) -> int | None:
    """The id of the pepper `pepper rotate` wrote to the file and has not recorded yet (it
    records it in the transaction that follows, or its next run does): the file's newest,
    above every recorded one, the others all recorded."""
    newest = peppers.current_id
    unrecorded = set(peppers.secrets) - set(recorded)
    if recorded and unrecorded == {newest} and newest > max(recorded):
        return newest
    return None


def _stat_signature(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def recorded_fingerprints(database_url: str) -> dict[int, str]:
    """Pepper id -> fingerprint, as the database recorded them (read-only, own connection)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from cpms_admin.db import database_failure, describe_db_error, make_engine, release

    engine = make_engine(database_url).execution_options(sqlite_begin="DEFERRED")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, fingerprint FROM pepper_key")).all()
    except DBAPIError as exc:
        doing = "cannot read the database's pepper fingerprints"
        if not _no_such_table(exc):  # a right refused, a file unreadable: upgrading won't do
            raise database_failure(exc, doing=doing) from None
        raise NotReady(f"{doing} ({describe_db_error(exc)}); run cpms-admin db upgrade") from None
    finally:
        release(engine)
    return {int(key): str(value) for key, value in rows}


def _no_such_table(exc: Exception) -> bool:
    """The driver's word for a table the schema does not have yet (PostgreSQL's SQLSTATE
    42P01, SQLite's message)."""
    original = getattr(exc, "orig", None)
    return getattr(original, "sqlstate", None) == "42P01" or "no such table" in str(original)


def check_fingerprints(peppers: Peppers, recorded: Mapping[int, str]) -> None:
    """NotReady unless the database recorded every pepper at hand, with this fingerprint."""
    if not recorded:
        raise NotReady(
            "the database records no pepper yet: run cpms-admin db upgrade with the pepper its "
            f"hashes were made with ({peppers.source})"
        )
    for key_id, secret in sorted(peppers.secrets.items()):
        if key_id not in recorded:
            raise NotReady(
                f"{peppers.source} holds pepper {key_id}, which this database never recorded: "
                "if a pepper rotate was interrupted, run cpms-admin pepper rotate again; "
                "otherwise this is another database's pepper"
            )
        if not hmac.compare_digest(fingerprint(secret), recorded[key_id]):
            raise NotReady(
                f"{peppers.source} is not this database's pepper (pepper {key_id}'s fingerprint "
                "differs from the one the database recorded): point CPMS_PEPPER_FILE at the "
                "database's own pepper file; never make a new one, every PIN would stop working"
            )
    if max(recorded) > peppers.current_id:
        raise NotReady(
            f"the database's current pepper is {max(recorded)}, but {peppers.source} holds "
            f"pepper {peppers.current_id} at most: use the pepper file written by the last "
            "pepper rotate"
        )


def new_secret() -> str:
    """64 hex characters from the OS's secure generator."""
    return secrets.token_hex(32)


# Who may read a pepper file: its owner, and the group of agents sharing a SQLite database
# (README, "Agents and rights"); nobody else, and nobody but its owner may write it.
_PEPPER_MODE_CEILING = 0o640


def write_pepper_file(path: Path, peppers: Mapping[int, str], *, make_folder: bool = False) -> None:
    """Write `peppers` (id -> secret) to `path`, durably and atomically: a private temporary
    file renamed into place, so nobody ever sees a partial or readable pepper. A new file is
    0600; a file replaced (a rotation) keeps its group and its group's read, so agents who
    share the database keep reading it. A file replaced through a link (an administrator's,
    to where backups look) is replaced where the link points, the link kept. Its folder is
    made (0700) only when asked (`make_folder`: `db upgrade --create-dirs`): a typo in
    CPMS_PEPPER_FILE must not make one. NotReady when it cannot be written: nothing changed."""
    try:
        _write_pepper_file(path, peppers, make_folder=make_folder)
    except OSError as exc:
        raise NotReady(
            f"cannot write pepper file {path}: {exc.strerror or exc}; nothing was changed"
        ) from None


def _write_pepper_file(path: Path, peppers: Mapping[int, str], *, make_folder: bool) -> None:
    try:
        replaced = os.stat(path)
    except FileNotFoundError:
        replaced = None
        if make_folder:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        if (planted := _planted_link(path)) is not None:
            raise NotReady(f"{planted}: refusing to write where it points; {_NOT_A_LINK}")
        path = Path(os.path.realpath(path))
    lines = "".join(f"{key}:{secret}\n" for key, secret in sorted(peppers.items()))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(lines.encode("ascii"))
            if replaced is not None:
                mode = _allowed_mode(replaced.st_mode)
                if os.fstat(out.fileno()).st_gid != replaced.st_gid:
                    try:  # before the group may read
                        os.fchown(out.fileno(), -1, replaced.st_gid)
                    except PermissionError:  # not one of that group: nobody else reads it
                        mode = 0o600
                os.fchmod(out.fileno(), mode)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _allowed_mode(mode: int) -> int:
    """`mode` with what a pepper file may not have taken away: 0600, and the group's read."""
    return (stat.S_IMODE(mode) & _PEPPER_MODE_CEILING & stat.S_IRGRP) | 0o600


def create_pepper_file(path: Path, *, make_folder: bool = True) -> Peppers:
    """A new file holding a new pepper 1, its folder made unless `make_folder` is off; never
    overwrites an existing file."""
    if path.exists() or path.is_symlink():
        raise Conflict(f"pepper file {path} already exists; refusing to overwrite it")
    write_pepper_file(path, {1: new_secret()}, make_folder=make_folder)
    return read_peppers_file(path)


def read_peppers_file(path: Path) -> Peppers:
    return parse_peppers(_read_pepper_file(path), f"pepper file {path}")


_NOT_A_LINK = "replace it with the database's own pepper file (or a link of your own)"


def _planted_link(path: Path) -> str | None:
    """What is wrong when `path` is a symbolic link another user made (who could point it
    at any file, or re-point it later: the pepper would be theirs to choose), else None."""
    try:
        link = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(link.st_mode) and not is_trusted(link):
        return f"pepper file {path} is a link another user made (uid {link.st_uid})"
    return None


def _read_pepper_file(path: Path) -> str:
    """The file's text, once it is a regular file that only its owner and group can read and
    only its owner can write (NotReady otherwise, saying how to fix it): a pepper others
    could read is no secret, and one they could write or plant (a shared directory such as
    /var/tmp) would be theirs. Opened without blocking, so a FIFO there is refused, not
    waited on for ever. A link another user made is refused, wherever it points."""
    if (planted := _planted_link(path)) is not None:
        raise NotReady(f"{planted}: {_NOT_A_LINK}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        problem = _file_problem(path, info)
        if problem is not None:
            what, fix = problem
            raise NotReady(f"{what}: {fix}")
        try:
            return handle.read().decode("utf-8")
        except UnicodeDecodeError:
            raise NotReady(f"cannot read pepper file {path}: not UTF-8 text") from None


def pepper_file_problem(path: Path) -> tuple[str, str] | None:
    """For `doctor`: what is wrong with the pepper file's presence or permissions and how to
    fix it, or None."""
    if (planted := _planted_link(path)) is not None:
        return planted, _NOT_A_LINK
    try:
        info = path.stat()
    except OSError as exc:
        why = exc.strerror or str(exc)
        return f"pepper file {path} cannot be read: {why}", "restore it from its backup"
    return _file_problem(path, info)


def _file_problem(path: Path, info: os.stat_result) -> tuple[str, str] | None:
    """What makes the file no private pepper of ours, and what fixes it; None if nothing.
    A regular file; made by this user or root, or shared with one of our groups (the agents
    of a database read it through theirs); its owner and group may read it (0640), nobody
    else anything, and only its owner may write it. A file another user made (planted in
    /var/tmp, which root would read all the same) is theirs, not a secret of ours."""
    if not stat.S_ISREG(info.st_mode):
        return f"pepper file {path} is not a regular file", "restore it from its backup"
    mode = stat.S_IMODE(info.st_mode)
    shared = bool(mode & stat.S_IRGRP) and is_teams(info)
    if not is_trusted(info) and not shared:
        return (
            f"pepper file {path} belongs to another user (uid {info.st_uid}) and is not shared "
            "with your group",
            f"if it is this database's, run the command as its owner (uid {info.st_uid}) or "
            "share it with your group (mode 0640); if not, restore the database's own pepper "
            "file there from its backup",
        )
    if mode & ~_PEPPER_MODE_CEILING & ~stat.S_IRWXU:
        who = "other users" if mode & stat.S_IRWXO else "its group beyond reading"
        return (
            f"pepper file {path} is open to {who} (mode {mode:04o})",
            f"chmod {_allowed_mode(mode):o} {path}",
        )
    return None
