"""Files that hold personal data: owner-only, and never written through a link someone planted.

Every file this program writes for people to pick up (exports, import error reports, letter
batches, e-mail files) goes through here, so four things hold whatever the umask (the portal
imports this package under its own):

- Owner-only: files are created 0600 and directories 0700, by explicit mode.
- No planted link followed: a file is written under a fresh random name created with
  O_EXCL|O_NOFOLLOW in its destination's directory, then renamed onto its final name. A rename
  replaces a name; it never writes into what a link at that name points to.
- No directory another user controls: every directory on the way must belong to root or to us
  (or be group-writable and of one of our groups: a folder our team shares, whose members
  may write there anyway) and must not be writable by everyone unless sticky (like /tmp);
  every link on the way must belong to root or to us. Otherwise that user could swap a name
  under us after our checks. (A group-writable directory trusts its group: print houses and
  teams of agents share folders that way.)
- Never onto what the program runs on: the database, the files named after it (its -wal and
  -shm, the batch lock) and the pepper, while the command line holds them `reserved`. An
  export given the database's name would otherwise replace it, and the pepper cannot be
  recovered.

A refusal is InvalidInput (exit 2), one line naming the path. Failures of the disk itself
(full, read-only) are left as OSError: each caller says what they mean for its job.
"""

import errno
import fcntl
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO, overload

from cpms_admin.errors import Conflict, InvalidInput, NotReady

_MAX_LINKS = 40  # as the kernel: more links on one path is a loop
# Files no output may replace: (real path, what it is, whether names that begin with its own
# name are its too). See `reserved`.
_RESERVED: list[tuple[Path, str, bool]] = []
# The run locks beside a database (`run_lock_file`): the letter batch's (letters/guard.py),
# those of `mail send`, `purge` and `code campaign` (`db.one_run`).
BATCH_LOCK, MAIL_LOCK, PURGE_LOCK = ".batch-lock", ".mail-lock", ".purge-lock"
CAMPAIGN_LOCK, PEPPER_LOCK = ".campaign-lock", ".pepper-lock"
# The files SQLite keeps beside a database, and the run locks.
COMPANIONS = (
    *("-wal", "-shm", "-journal"),
    *(BATCH_LOCK, MAIL_LOCK, PURGE_LOCK, CAMPAIGN_LOCK, PEPPER_LOCK),
)


def absolute(path: Path) -> Path:
    """`path` from the current directory; NotReady, saying so, when a relative path meets a
    current directory that was deleted (an absolute one needs none)."""
    if path.is_absolute():
        return path
    try:
        return Path.cwd() / path
    except FileNotFoundError:  # getcwd
        raise NotReady(
            "the current directory no longer exists: run from another one (relative paths, "
            "such as the default data/cpms.db, are read from it)"
        ) from None


@contextmanager
def reserved(path: Path, what: str, *, with_companions: bool = False) -> Iterator[None]:
    """While the block runs, refuse to write a file at `path` (`what` names it in the
    refusal) or, `with_companions`, at the names of its COMPANIONS. `path` need not exist."""
    real = Path(os.path.realpath(absolute(path)))
    entry = (real, what, with_companions)
    _RESERVED.append(entry)
    try:
        yield
    finally:
        _RESERVED.remove(entry)


def _refuse_reserved(final: Path) -> None:
    """`final`: a real directory and a name."""
    if (what := _reserved_as(final)) is not None:
        raise InvalidInput(f"{final} is {what}; refusing to replace it: choose another name")


def refuse_reserved_source(path: Path, reading: str) -> None:
    """Refuse to read `path` as `reading` (members to import, a NIR list) when it is a file
    the command runs on, by its name or a hard link: the pepper read as members would be
    quoted back in the refusal of its first line, and end in a terminal or a cron e-mail."""
    real = Path(os.path.realpath(absolute(path)))
    what = _reserved_as(real)
    if what is None:
        with suppress(OSError):
            found = os.stat(real)
            what = next((what for held, what, _ in _RESERVED if _same_file(held, found)), None)
    if what is not None:
        raise InvalidInput(f"{path} is {what}, not {reading}: give the file you meant")


def _reserved_as(final: Path) -> str | None:
    """What reserved file `final` (a real directory and a name) is, in words, if it is one."""
    for path, what, with_companions in _RESERVED:
        if final.parent != path.parent:
            continue
        if final.name == path.name:
            return what
        if with_companions and final.name in {path.name + end for end in COMPANIONS}:
            return f"one of {what}'s files"
    return None


def _same_file(path: Path, info: os.stat_result) -> bool:
    try:
        held = os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino)


def describe_entry(path: Path) -> str | None:
    """What is at `path` itself (a link is not followed), in words; None when nothing is."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a file" if stat.S_ISREG(mode) else "a special file"


def is_own_directory(path: Path) -> bool:
    """Whether `path` itself is a directory (not a link to one) that this user owns."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def is_trusted(info: os.stat_result) -> bool:
    """Made by this user or root: an entry nobody else could have planted."""
    return info.st_uid in (0, os.geteuid())


def is_teams(info: os.stat_result) -> bool:
    """Whether an entry belongs to one of our groups: a folder a group of agents shares
    (README "Agents and rights") gives its files its group. Only a member may give an entry a
    group, and the members may write in the shared folder anyway."""
    return info.st_gid == os.getegid() or info.st_gid in os.getgroups()


def _check_directory(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{path} exists and is not a directory")
    shared = bool(info.st_mode & stat.S_IWGRP) and is_teams(info)
    if not is_trusted(info) and not shared:
        raise InvalidInput(
            f"{path} belongs to another user (uid {info.st_uid}) and is no folder your group "
            "shares; refusing to write"
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise InvalidInput(f"{path} is writable by every user and not sticky; refusing to write")


def _real_directory(path: Path) -> Path:
    """The real path of the existing directory `path`, every directory and link on the way
    checked (see the module's docstring). FileNotFoundError when a part is missing."""
    pending = list(path.parts[1:])
    current = Path(path.anchor)
    _check_directory(current, os.lstat(current))
    links = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            current = current.parent  # `current` holds no link: this is the kernel's `..`
            continue
        candidate = current / name
        info = os.lstat(candidate)
        if stat.S_ISLNK(info.st_mode):
            if not is_trusted(info):
                raise InvalidInput(
                    f"{candidate} is a symbolic link of another user (uid {info.st_uid}); "
                    "refusing to follow it"
                )
            links += 1
            if links > _MAX_LINKS:
                raise InvalidInput(f"{path}: too many symbolic links")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path(target.anchor)
            pending[:0] = target.parts[1:] if target.is_absolute() else target.parts
            continue
        _check_directory(candidate, info)
        current = candidate
    return current


def _existing_directory(path: Path) -> Path:
    try:
        return _real_directory(path)
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such directory") from None


def check_destination(path: Path) -> Path:
    """Where a file for `path` may be written: its directory's real path and its name.

    Refused: a directory another user controls (see above), and a name that holds a link, a
    directory, a special file or another user's file. Replacing a link would be harmless (the
    rename replaces the link, never its target), but a link where a file is expected is a
    mistake or a trap, and the person running us should hear of it.
    """
    path = absolute(path)
    if path.name in ("", ".", ".."):
        raise InvalidInput(f"{path} is a directory, not a file name")
    final = _existing_directory(path.parent) / path.name
    _refuse_reserved(final)
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        return final
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(
            f"{final} is {describe_entry(final)}; refusing to replace it: remove it "
            "or choose another name"
        )
    if not is_trusted(info):
        raise InvalidInput(f"{final} belongs to another user (uid {info.st_uid}); refusing")
    return final


def remove_replaceable(path: Path, earlier: os.stat_result) -> bool:
    """Remove the file at `path` if it is still the one `earlier` describes and a writer here
    could replace it (`check_destination`); whether it did. For an output of an earlier run
    that would be mistaken for this one's."""
    try:
        final = check_destination(path)
        if not _same_entry(final, earlier):
            return False  # another file now: another run's
        os.unlink(final)
    except (InvalidInput, OSError):  # not ours to replace, or not there
        return False
    return True


def check_writable(path: Path) -> None:
    """InvalidInput, saying why, unless files can be written in directory `path` (made
    with its missing parents if need be) by this user: what `private_dir` and the writers
    would refuse, checked without creating anything (for `doctor`)."""
    path = absolute(path)
    if describe_entry(path) == "a symbolic link":
        raise InvalidInput(f"{path} is a symbolic link; give the directory itself")
    existing = path
    while describe_entry(existing) is None and existing != existing.parent:
        existing = existing.parent  # the missing ones are made in the one that exists
    real = _existing_directory(existing)
    if not os.access(real, os.W_OK | os.X_OK):
        raise InvalidInput(f"this user cannot write in {real}")


def private_dir(path: Path, *, like: Path | None = None) -> Path:
    """The real path of directory `path`, to write in; missing, it is created 0700 (and its
    missing parents too), or with the owner and group bits of `like` when given: a folder
    every agent of a database writes in (the outbox, the audit archive) follows the database
    file, as the run locks do. Refused: `path` itself a link (give the directory it points
    to), not a directory, or controlled by another user (see above)."""
    path = absolute(path)
    if describe_entry(path) == "a symbolic link":
        raise InvalidInput(f"{path} is a symbolic link; give the directory itself")
    return _make_directory(path, _mode_like(like, directory=True), _group_of(like))


def _make_directory(path: Path, mode: int, group: int | None = None) -> Path:
    with suppress(FileNotFoundError):
        return _real_directory(path)
    parent = _make_directory(path.parent, mode, group)
    try:
        os.mkdir(parent / path.name, 0o700)
    except FileExistsError:  # made meanwhile: checked below like any other
        pass
    else:  # mkdir's mode met the umask (077): set the bits on what was made, keeping the
        # setgid bit it inherits from a group's folder (its files then go to that group)
        fd = os.open(parent / path.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, mode | os.fstat(fd).st_mode & stat.S_ISGID)
            _give_group(fd, group)
        finally:
            os.close(fd)
    return _real_directory(parent / path.name)


def _mode_like(like: Path | None, *, directory: bool) -> int:
    """The owner and group bits of file `like` (owner-only when there is none), a search bit
    beside each read bit for a directory."""
    bits = 0o600
    if like is not None:
        with suppress(OSError):  # no database file yet: owner-only
            bits |= stat.S_IMODE(like.stat().st_mode) & 0o060
    return bits | (bits & 0o440) >> 2 if directory else bits


def _group_of(like: Path | None) -> int | None:
    """The group of file `like` when it gives its group any bit (the database of a group of
    agents), for what is made beside it: None when it gives none, or is not there."""
    try:
        info = like.stat() if like is not None else None
    except OSError:
        return None
    return info.st_gid if info is not None and info.st_mode & 0o060 else None


def _give_group(fd: int, group: int | None) -> None:
    """Hand what `fd` is to `group`: in a folder without the setgid bit it would take its
    maker's primary group (the cron user's), which the other agents may not be in. A maker
    outside the group cannot, and leaves it (`doctor` says what to fix)."""
    if group is not None and os.fstat(fd).st_gid != group:
        with suppress(PermissionError):
            os.fchown(fd, -1, group)


@contextmanager
def directory_fd(path: Path) -> Iterator[int | None]:
    """A descriptor of the existing directory `path`, to work inside it by name (`dir_fd=`,
    which no link swapped in later can redirect), or None when there is no such directory.
    The way there is checked as for a destination (see above); `path` itself must not be a
    link. Nothing is created. Closed when the block ends."""
    path = absolute(path)
    if describe_entry(path) == "a symbolic link":
        raise InvalidInput(f"{path} is a symbolic link; give the directory itself")
    try:
        real = _real_directory(path)
    except FileNotFoundError:
        real = None
    if real is None:
        yield None
        return
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@overload
def write_private_atomically(
    path: Path, *, encoding: None = None, new_name: bool = False
) -> AbstractContextManager[BinaryIO]: ...
@overload
def write_private_atomically(
    path: Path, *, encoding: str, new_name: bool = False
) -> AbstractContextManager[TextIO]: ...
def write_private_atomically(
    path: Path, *, encoding: str | None = None, new_name: bool = False
) -> AbstractContextManager[IO[Any]]:
    """A file (0600) that appears at `path` complete, durable, or not at all: the handle
    writes a private temporary file beside it, renamed onto `path` when the block succeeds.
    Text mode (`encoding`) does not translate line ends. Refusals: see `check_destination`.

    The temporary files a killed run left for `path` are removed first, unless `new_name`
    says no run wrote that name before (an e-mail's, a letter's: one per file, thousands in
    a folder, where looking would cost a listing each)."""
    return _written(path, encoding, new_name)


_TOKEN_BYTES = 4  # of a temporary file's name (`_written`), as `remove_left_behind` finds it


@contextmanager
def _written(path: Path, encoding: str | None, new_name: bool) -> Iterator[IO[Any]]:
    final = check_destination(path)
    if not new_name:
        remove_left_behind(final)
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    renamed = False
    try:
        with suppress(OSError):  # no locks there (NFS): then nobody can take it either
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while it is written: `remove_left_behind`
        mode, newline = ("w", "") if encoding else ("wb", None)
        with open(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        renamed = True
    finally:
        if not renamed:  # never after: the name may be someone else's by then
            temporary.unlink(missing_ok=True)
    fsync_dir(final.parent)


_SETTLED_SECONDS = 10


def remove_left_behind(final: Path, *, settled_seconds: float = _SETTLED_SECONDS) -> None:
    """Remove the temporary files of `final` a killed run left (kill -9 runs no `finally`):
    this user's `.<name>.<hex>.tmp` files beside it that no live writer holds. A writer holds
    its file's `flock` until it ends, and a process's locks die with it, so a file whose lock
    can be taken is nobody's; one younger than `settled_seconds` is left, as its writer may
    not have locked it yet (0 for a caller whose own lock says no writer is alive). Personal
    data (rejected rows, a dossier) would stay otherwise, hidden, for good."""
    remove_left_behind_in(final.parent, re.escape(final.name), settled_seconds=settled_seconds)


def remove_left_behind_in(
    folder: Path, names: str, *, settled_seconds: float = _SETTLED_SECONDS
) -> None:
    """`remove_left_behind` for every file of `folder` whose name the regular expression
    `names` matches: for files each run names anew (an audit archive, by its moment), which
    a killed run leaves under a name no later run writes again."""
    try:
        found = os.listdir(folder)
    except OSError:
        return
    ours = re.compile(rf"\.(?:{names})\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp")
    for name in found:
        if not ours.fullmatch(name):
            continue
        left = folder / name
        try:
            fd = os.open(left, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                continue
            if time.time() - info.st_mtime < settled_seconds:
                continue  # a writer may be between making it and locking it
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_entry(left, info):  # still the file locked, not one put there since
                left.unlink()
        except OSError:
            continue  # a live writer's (BlockingIOError), or gone meanwhile
        finally:
            os.close(fd)


def _same_entry(path: Path, info: os.stat_result) -> bool:
    """Whether `path` names the very file `info` describes, unchanged since (a file written
    in its place since is another, even on a reused inode)."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino, now.st_mtime_ns) == (info.st_dev, info.st_ino, info.st_mtime_ns)


def create_private_file(path: Path) -> None:
    """An empty owner-only file at `path`, whatever the umask (SQLite makes a new database's
    file as the umask allows, and its -wal and -shm with the file's mode). A file made there
    meanwhile stands; any other failure is left to whoever opens the file next to report."""
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def run_lock_file(database: Path, suffix: str) -> Path:
    """The run lock `suffix` of the database file, named after the file itself however the
    command reached it (a link to it, `..`): two runs on one database always meet."""
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + suffix)


def hold_run_lock(path: Path, *, like: Path, busy: str) -> int:
    """Take the exclusive `flock` of the run lock file `path` and return its descriptor:
    closing it releases the lock, and so does the process dying. Conflict(`busy`) when
    another process holds it. Created, the file gets the owner and group bits of `like` (the
    database: the agents of one group share it, README "Agents and rights"); one that exists
    is opened read-only, all `flock` needs. NotReady, saying what to fix, when it cannot be
    opened (another agent made it owner-only)."""
    fd = _open_lock_file(path, like=like)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(busy) from None
    return fd


def _open_lock_file(path: Path, *, like: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _open_existing_lock(path)
    except OSError as exc:
        raise NotReady(f"cannot create the lock {path} ({exc.strerror})") from None
    os.fchmod(fd, _mode_like(like, directory=False))
    _give_group(fd, _group_of(like))
    return fd


def _open_existing_lock(path: Path) -> int:
    try:  # non-blocking: a FIFO planted there would hold the open for ever
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise NotReady(
                f"the lock {path} is a symbolic link, not a file: remove it while nothing runs"
            ) from None
        raise NotReady(
            f"cannot open the lock {path} ({exc.strerror}): give it the database file's "
            "owner, group and mode (chgrp, chmod 660), or remove it while nothing runs"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotReady(
            f"the lock {path} is {describe_entry(path)}, not a file: remove it while nothing runs"
        )
    return fd
