"""The pepper: the server-side secret mixed into every PIN and code hash.

It lives outside the database (environment or a 0600 file) so a stolen database dump
alone cannot be brute-forced. Its value never appears in a message.
"""

import os
import secrets
import stat
from pathlib import Path

from cpms_admin.errors import NotReady
from cpms_admin.settings import Settings

DEFAULT_PEPPER_FILE = Path("data/pepper")


def pepper_file_path(settings: Settings) -> Path | None:
    """The file `load_pepper` would read: None when CPMS_PEPPER is set or no file is configured
    and the default one does not exist."""
    if settings.pepper:
        return None
    if settings.pepper_file:
        return Path(settings.pepper_file)
    return DEFAULT_PEPPER_FILE if DEFAULT_PEPPER_FILE.exists() else None


def load_pepper(settings: Settings) -> bytes:
    """CPMS_PEPPER wins, then CPMS_PEPPER_FILE, then `data/pepper`; raise NotReady otherwise.

    The pepper is the text itself (surrounding whitespace removed), not its hex decoding,
    so copying the file's content into CPMS_PEPPER gives the same hashes.
    """
    if settings.pepper:
        return settings.pepper.encode("utf-8")
    path = pepper_file_path(settings)
    if path is None:
        raise NotReady(
            "no pepper: set CPMS_PEPPER or CPMS_PEPPER_FILE, or run cpms-admin db upgrade"
        )
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise NotReady(f"cannot read pepper file {path}: {exc.strerror or exc}") from None
    if not value:
        raise NotReady(f"pepper file {path} is empty")
    return value


def create_pepper_file(path: Path) -> None:
    """Write a new random pepper (64 hex characters) to `path`, mode 0600; never overwrite.

    The content goes to a private temporary file first, then is hard-linked into place: the
    link fails if `path` exists, and nobody ever sees a partial or world-readable pepper.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"pepper file {path} already exists; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_hex(32).encode("ascii") + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pepper_file_problem(path: Path) -> str | None:
    """For `doctor`: what is wrong with the pepper file's presence or permissions, or None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"pepper file {path} cannot be read: {exc.strerror or exc}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"pepper file {path} is accessible to other users (mode {stat.S_IMODE(mode):04o});"
            f" run: chmod 600 {path}"
        )
    return None
