"""On PostgreSQL the database enforces what the application checks: one group role per role
(`cpms_support`, ...), with privileges on the schema's tables, and each agent's login role a
member of its group (`agent add` grants it, `agent disable` revokes it).

Every group may read and write the working tables, but nobody may UPDATE the audit log or
its chain's head, only the roles that purge (admin, nightly) may DELETE archived events (the
chain says so if anything else goes), and only admins may change the `agent` table. Applied
after every upgrade (migrations/env.py), so tables added later get the same privileges.
README, "Agents and rights", has what a DBA does once.
"""

from sqlalchemy import Connection, text

from cpms_admin.agents.roles import Duty, Role, may
from cpms_admin.errors import NotReady

GROUP_PREFIX = "cpms_"


def group_of(role: Role) -> str:
    return f"{GROUP_PREFIX}{role}"


GROUPS = tuple(group_of(role) for role in Role)
_ALL = ", ".join(GROUPS)


def _groups(*, without: Duty) -> str:
    """The groups whose role lacks `without`."""
    return ", ".join(group_of(role) for role in Role if not may(role, without))


def apply_grants(conn: Connection) -> None:
    """Create the group roles if missing (the cluster may already have them: they are shared
    by its databases), then set this database's privileges. Idempotent."""
    for group in GROUPS:
        # A concurrent upgrade of another database may create the role between the test and
        # the CREATE: that is fine, the role is the same.
        conn.execute(
            text(
                f"""DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{group}') THEN
                    CREATE ROLE {group} NOLOGIN;
                END IF;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$"""
            )
        )
    for statement in (
        f"GRANT USAGE ON SCHEMA public TO {_ALL}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {_ALL}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {_ALL}",
        f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {_ALL}",
        # The audit log: appended to, never changed; old events deleted only by purge, which
        # archives them and re-anchors the chain (audit_chain/archive.py).
        f"REVOKE UPDATE, TRUNCATE ON audit_event FROM {_ALL}",
        f"REVOKE DELETE ON audit_event FROM {_groups(without=Duty.retain)}",
        # The chain's one-row head: moved on, never added to or removed.
        f"REVOKE INSERT, DELETE, TRUNCATE ON audit_chain FROM {_ALL}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON agent FROM {_groups(without=Duty.administer)}",
    ):
        conn.execute(text(statement))


def grant_membership(conn: Connection, *, name: str, role: Role) -> None:
    """Make login role `name` a member of `role`'s group only. The login role must exist: the
    DBA creates it (`CREATE ROLE alice LOGIN ...`), as passwords are theirs to manage.

    An admin is given every group WITH ADMIN OPTION: PostgreSQL lets only the holders of that
    option grant and revoke a group, and an admin who is not the owner must be able to add and
    disable agents. The other groups add no privilege an admin lacks."""
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name})
    if exists.first() is None:
        raise NotReady(
            f"no database login role {name!r}: a DBA creates it first "
            f'(CREATE ROLE "{name}" LOGIN PASSWORD ...), see README "Agents and rights"'
        )
    revoke_membership(conn, name=name)
    if role == Role.admin:
        conn.execute(text(f"GRANT {_ALL} TO {_quoted(conn, name)} WITH ADMIN OPTION"))
    else:
        conn.execute(text(f"GRANT {group_of(role)} TO {_quoted(conn, name)}"))


def revoke_membership(conn: Connection, *, name: str) -> None:
    conn.execute(text(f"REVOKE {_ALL} FROM {_quoted(conn, name)}"))


def _quoted(conn: Connection, name: str) -> str:
    return str(conn.execute(text("SELECT quote_ident(:name)"), {"name": name}).scalar_one())
