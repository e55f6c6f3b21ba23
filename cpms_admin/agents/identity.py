"""Who is acting, as the system says: the database role the connection logged in as on
PostgreSQL (`session_user`, which `SET ROLE` does not change), the OS user running the
process on SQLite. Never an environment variable or a flag: `USER=portal` changes nothing.
(`--agent` / `CPMS_AGENT` only add a label beside this name, see `audit.acting`.)"""

import os
import pwd

from sqlalchemy import Connection, text


def system_identity(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        name = conn.execute(text("SELECT session_user")).scalar_one()
        return str(name)
    return os_user()


def os_user() -> str:
    """The effective user's login name (not `getpass.getuser()`, which believes $USER)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's user with no passwd entry
        return f"uid-{uid}"


def os_user_exists(name: str) -> bool:
    """Whether some process of this machine can be `name` (an SQLite agent who can act): a
    login name, or the `uid-N` that `os_user` names a user without one."""
    uid = name.removeprefix("uid-")
    if uid != name and uid.isascii() and uid.isdigit() and name == f"uid-{int(uid)}":
        try:
            pwd.getpwuid(int(uid))
        except KeyError:
            return True  # that user acts as `uid-N`
        return False  # they act under their login name
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
