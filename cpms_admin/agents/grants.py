"""On PostgreSQL the database enforces what the application checks: one group role per role
and database (`cpms_support@cpms`, ...), with privileges on the schema's tables, and each
agent's login role a member of its group (`agent add` grants it, `agent disable` revokes it).

Every group may read and write the working tables, but nobody may UPDATE the audit log or
its chain's head, only the roles that purge (admin, nightly) may DELETE archived events (the
chain says so if anything else goes), and only admins may change the `agent` table. Applied
after every upgrade (migrations/env.py), so tables added later get the same privileges.

Roles are the cluster's, not the database's: groups named after the database keep an agent's
rights in one CPMS database (staging) apart from their rights in another (production). Before
migration 0015 the groups were `cpms_support`, ..., shared by every database of the cluster.
README, "Agents and rights", has what a DBA does once.
"""

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from cpms_admin.agents.roles import Duty, Role, may
from cpms_admin.errors import NotReady

# PostgreSQL cuts longer identifiers to this many bytes (NAMEDATALEN - 1), silently.
_NAME_MAX_BYTES = 63
_ALREADY_THERE = ("42710", "23505")  # duplicate_object, unique_violation

LEGACY_GROUPS = tuple(f"cpms_{role}" for role in Role)


def group_name(role: Role, database: str) -> str:
    """`cpms_<role>@<database>`. A database name too long for that keeps its start and
    gains a digest of the whole name, so that two long names never share a group."""
    name = f"cpms_{role}@{database}"
    if len(name.encode()) <= _NAME_MAX_BYTES:
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    room = _NAME_MAX_BYTES - len(f"cpms_{role}@~{digest}")
    start = database.encode()[:room].decode(errors="ignore")
    return f"cpms_{role}@{start}~{digest}"


def groups_of(database: str) -> dict[Role, str]:
    return {role: group_name(role, database) for role in Role}


def apply_grants(conn: Connection) -> None:
    """Create this database's group roles if missing, then set their privileges. Idempotent."""
    groups = _groups(conn)
    for group in groups.values():
        _create_group(conn, group)
    everyone = _list(conn, groups.values())

    def lacking(duty: Duty) -> str:
        return _list(conn, (group for role, group in groups.items() if not may(role, duty)))

    for statement in (
        f"GRANT USAGE ON SCHEMA public TO {everyone}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {everyone}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {everyone}",
        f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {everyone}",
        # The audit log: appended to, never changed; old events deleted only by purge, which
        # archives them and re-anchors the chain (audit_chain/archive.py).
        f"REVOKE UPDATE, TRUNCATE ON audit_event FROM {everyone}",
        f"REVOKE DELETE ON audit_event FROM {lacking(Duty.retain)}",
        # The chain's one-row head: moved on, never added to or removed.
        f"REVOKE INSERT, DELETE, TRUNCATE ON audit_chain FROM {everyone}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON agent FROM {lacking(Duty.administer)}",
    ):
        conn.execute(text(statement))


def leave_legacy_groups(conn: Connection) -> None:
    """Give each enabled agent its group of this database, then take from the cluster-wide
    groups of before 0015 every privilege they held here. Their members are left alone: the
    cluster's other CPMS databases may not be upgraded yet."""
    agents = conn.execute(
        text(
            "SELECT agent.name, agent.role FROM agent JOIN pg_roles ON rolname = agent.name "
            "WHERE agent.disabled_at IS NULL"
        )
    )
    for name, role in agents.all():
        grant_membership(conn, name=name, role=Role(role))
    existing = conn.execute(
        text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
        {"names": list(LEGACY_GROUPS)},
    ).scalars()
    legacy = _list(conn, existing)
    if legacy:
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {legacy}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {legacy}"))
        conn.execute(text(f"REVOKE USAGE ON SCHEMA public FROM {legacy}"))


def grant_membership(conn: Connection, *, name: str, role: Role) -> None:
    """Make login role `name` a member of `role`'s group only. The login role must exist: the
    DBA creates it (`CREATE ROLE alice LOGIN ...`), as passwords are theirs to manage.

    An admin is given every group of this database WITH ADMIN OPTION: PostgreSQL lets only
    the holders of that option grant and revoke a group, and an admin who is not the owner
    must be able to add and disable agents. The other groups add no privilege an admin lacks."""
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name})
    if exists.first() is None:
        raise NotReady(
            f"no database login role {name!r}: a DBA creates it first "
            f'(CREATE ROLE "{name}" LOGIN PASSWORD ...), see README "Agents and rights"'
        )
    revoke_membership(conn, name=name)
    groups = _groups(conn)
    login = _quoted(conn, name)
    if role == Role.admin:
        conn.execute(text(f"GRANT {_list(conn, groups.values())} TO {login} WITH ADMIN OPTION"))
    else:
        conn.execute(text(f"GRANT {_quoted(conn, groups[role])} TO {login}"))


def revoke_membership(conn: Connection, *, name: str) -> None:
    """Take `name` out of this database's groups (not out of another database's)."""
    conn.execute(text(f"REVOKE {_list(conn, _groups(conn).values())} FROM {_quoted(conn, name)}"))


def _groups(conn: Connection) -> dict[Role, str]:
    return groups_of(str(conn.execute(text("SELECT current_database()")).scalar_one()))


def _create_group(conn: Connection, group: str) -> None:
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": group})
    if exists.first() is not None:
        return
    try:
        # A concurrent upgrade of the same database may create it between the test and here.
        with conn.begin_nested():
            conn.execute(text(f"CREATE ROLE {_quoted(conn, group)} NOLOGIN"))
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) not in _ALREADY_THERE:
            raise


def _list(conn: Connection, names: Iterable[str]) -> str:
    return ", ".join(_quoted(conn, name) for name in names)


def _quoted(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)
