"""On PostgreSQL the database enforces what the application checks: one group role per role
and database (`cpms_support@cpms`, ...), with privileges on the schema's tables, and each
agent's login role a member of its group (`agent add` grants it, `agent disable` revokes it).

Every group may read and write the working tables, but nobody may UPDATE the audit log or
its chain's head, only the roles that purge (admin, nightly) may DELETE archived events (the
chain says so if anything else goes), and only admins may change the `agent` table and the
pepper's fingerprints (`pepper_key`). Applied
after every upgrade (migrations/env.py), so tables added later get the same privileges.

Roles are the cluster's, not the database's: groups named after the database keep an agent's
rights in one CPMS database (staging) apart from their rights in another (production). Before
migration 0015 the groups were `cpms_support`, ..., shared by every database of the cluster.
README, "Agents and rights", has what a DBA does once.
"""

import hashlib
import re
from collections.abc import Iterable

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from cpms_admin.agents.roles import Duty, Role, may
from cpms_admin.errors import NotReady, Refused

# PostgreSQL cuts longer identifiers to this many bytes (NAMEDATALEN - 1), silently.
_NAME_MAX_BYTES = 63
_ALREADY_THERE = ("42710", "23505")  # duplicate_object, unique_violation
_DIGEST_HEX = 16  # 64 bits: no second database name can be made to match by trying
_LOOKS_CUT = re.compile(rf"~[0-9a-f]{{{_DIGEST_HEX}}}\Z")
# A CPMS group of any database, or of the whole cluster (before 0015).
_ANY_GROUP = re.compile(rf"cpms_({'|'.join(Role)})(@.*)?", re.DOTALL)


def group_name(role: Role, database: str) -> str:
    """`cpms_<role>@<database>`. A database name too long for that, or one that ends as a
    cut one does (`~` and a digest), keeps its start and gains a digest of the whole name:
    no two databases share a group, whatever their names."""
    name = f"cpms_{role}@{database}"
    if len(name.encode()) <= _NAME_MAX_BYTES and not _LOOKS_CUT.search(database):
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:_DIGEST_HEX]
    room = _NAME_MAX_BYTES - len(f"cpms_{role}@~{digest}")
    start = database.encode()[:room].decode(errors="ignore")
    return f"cpms_{role}@{start}~{digest}"


def groups_of(database: str) -> dict[Role, str]:
    return {role: group_name(role, database) for role in Role}


def apply_grants(conn: Connection) -> None:
    """Make the database's roles what its `agent` table says, whatever the cluster held
    before (the shared groups of before 0015, a renamed or copied database's groups, groups
    left by a dropped database of the same name). Idempotent; run after every upgrade:

    - create this database's groups if missing, and give them their privileges;
    - take every privilege here from any other CPMS group;
    - make the enabled agents, and only them, members of this database's groups."""
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
        # The pepper's fingerprints: one agent's edit would stop every login and code.
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pepper_key FROM {lacking(Duty.administer)}",
    ):
        conn.execute(text(statement))
    _revoke_other_groups(conn, set(groups.values()))
    _match_agents(conn, groups)


def _revoke_other_groups(conn: Connection, ours: set[str]) -> None:
    grantees = conn.execute(
        text(
            "SELECT r.rolname FROM pg_class c, aclexplode(c.relacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee WHERE c.relnamespace = 'public'::regnamespace "
            "UNION SELECT r.rolname FROM pg_namespace n, aclexplode(n.nspacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee WHERE n.nspname = 'public'"
        )
    ).scalars()
    others = _list(conn, (g for g in grantees if _ANY_GROUP.fullmatch(g) and g not in ours))
    if others:
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {others}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {others}"))
        conn.execute(text(f"REVOKE ALL ON SCHEMA public FROM {others}"))


def _match_agents(conn: Connection, groups: dict[Role, str]) -> None:
    """Each enabled agent in its role's group (an admin in all, WITH ADMIN OPTION), and no
    one else, save whoever runs this (PostgreSQL 16 makes a role's creator its admin)."""
    held: dict[str, set[tuple[str, bool]]] = {}
    for group, member, admin_option in conn.execute(
        text(
            "SELECT g.rolname, m.rolname, am.admin_option FROM pg_auth_members am "
            "JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member "
            "WHERE g.rolname = ANY(:groups)"
        ),
        {"groups": list(groups.values())},
    ):
        held.setdefault(member, set()).add((group, admin_option))
    agents = {
        name: role
        for name, role in conn.execute(
            text(
                "SELECT agent.name, agent.role FROM agent JOIN pg_roles ON rolname = agent.name "
                "WHERE agent.disabled_at IS NULL"
            )
        )
        if not _members_of(conn, name)  # granted to others since: no group for any of them
    }
    me = conn.execute(text("SELECT current_user")).scalar_one()
    for name in set(held) | set(agents):
        if name not in agents:
            if name != me:
                revoke_membership(conn, name=name)
            continue
        role = Role(agents[name])
        wanted = (
            {(group, True) for group in groups.values()}
            if role == Role.admin
            else {(groups[role], False)}
        )
        if held.get(name, set()) != wanted:
            grant_membership(conn, name=name, role=role)


def check_login_role(conn: Connection, name: str) -> None:
    """Before `agent add`: `name` must be a login role, which the DBA creates (`CREATE ROLE
    alice LOGIN ...`), as passwords are theirs to manage. A CPMS group or one of PostgreSQL's
    own `pg_*` roles is refused: its members would all gain the agent's role (the support
    agents' group made nightly could delete audit events from psql)."""
    can_login = conn.execute(
        text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :name"), {"name": name}
    ).scalar()
    if can_login is None:
        raise NotReady(
            f"no database login role {name!r}: a DBA creates it first "
            f'(CREATE ROLE "{name}" LOGIN PASSWORD ...), see README "Agents and rights"'
        )
    if _ANY_GROUP.fullmatch(name) or name.startswith("pg_"):
        raise Refused(
            f"{name!r} is a group role: its members would all gain the agent's role; an agent "
            "is one person's or one job's login role"
        )
    if not can_login:
        raise Refused(
            f'{name!r} cannot log in: ALTER ROLE "{name}" LOGIN if it is a person\'s or a '
            "job's role made without it"
        )
    if members := _members_of(conn, name):
        raise Refused(
            f"{name!r} is granted to other roles ({', '.join(members)}): they would all gain "
            "the agent's role; add each person's own login role as an agent"
        )


def _members_of(conn: Connection, name: str) -> list[str]:
    """The roles `name` is granted to, which gain its rights in psql. Not, from PostgreSQL
    16 on, a grant that neither inherits nor lets them SET ROLE: the one that makes a
    role's creator its admin (the DBA's CREATEROLE role, who could grant it to anyone
    anyway)."""
    query = (
        "SELECT m.rolname FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid "
        "JOIN pg_roles m ON m.oid = am.member WHERE r.rolname = :name"
    )
    if (conn.dialect.server_version_info or (0,)) >= (16,):
        query += " AND (am.inherit_option OR am.set_option)"
    return list(conn.execute(text(query + " ORDER BY 1"), {"name": name}).scalars())


def grant_membership(conn: Connection, *, name: str, role: Role) -> None:
    """Make role `name` a member of `role`'s group only.

    An admin is given every group of this database WITH ADMIN OPTION: PostgreSQL lets only
    the holders of that option grant and revoke a group, and an admin who is not the owner
    must be able to add and disable agents. The other groups add no privilege an admin lacks."""
    revoke_membership(conn, name=name)
    groups = _groups(conn)
    login = _quoted(conn, name)
    if role == Role.admin:
        conn.execute(text(f"GRANT {_list(conn, groups.values())} TO {login} WITH ADMIN OPTION"))
    else:
        conn.execute(text(f"GRANT {_quoted(conn, groups[role])} TO {login}"))


def revoke_membership(conn: Connection, *, name: str) -> None:
    """Take `name` out of this database's groups (not out of another database's). A role
    dropped (or renamed) by the DBA has no membership left to take: the agent is disabled
    all the same."""
    if _role_exists(conn, name):
        conn.execute(
            text(f"REVOKE {_list(conn, _groups(conn).values())} FROM {_quoted(conn, name)}")
        )


def _groups(conn: Connection) -> dict[Role, str]:
    return groups_of(str(conn.execute(text("SELECT current_database()")).scalar_one()))


def _role_exists(conn: Connection, name: str) -> bool:
    found = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name})
    return found.first() is not None


def _create_group(conn: Connection, group: str) -> None:
    if _role_exists(conn, group):
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
