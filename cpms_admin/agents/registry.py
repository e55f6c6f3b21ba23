"""Agents: who may run commands, with which role; and the check every command passes first.

An agent is named by the system (agents/identity.py), so the check reads the name from the
connection itself. Adding, re-roling and disabling agents are audited, and on PostgreSQL also
change the login role's group (agents/grants.py), so `psql` obeys the same role.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, event
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.agents import grants
from cpms_admin.agents.identity import os_user_exists, system_identity
from cpms_admin.agents.rights import COMMAND_DUTIES
from cpms_admin.agents.roles import Role, least_role_for, may
from cpms_admin.clock import iso
from cpms_admin.db import transaction
from cpms_admin.errors import NotFound, Refused
from cpms_admin.faults import failpoint
from cpms_admin.models import Agent
from cpms_admin.vocabulary import AuditAction


@dataclass(frozen=True)
class Actor:
    """Who runs this command, as the system says, and the role that let them."""

    name: str
    role: Role


def identity(session: Session) -> str:
    return _who(session.connection())


def _who(conn: Connection) -> str:
    """Who logged in (agents/identity.py). It does not change for the connection's life:
    asked once, not at every transaction of a run sending thousands of e-mails."""
    name: str = conn.info.get(_IDENTITY) or conn.info.setdefault(_IDENTITY, system_identity(conn))
    return name


def authorize(session: Session, *, command: str) -> Actor:
    """The actor, when their role allows `command` (a key of rights.COMMAND_DUTIES); Refused
    (exit 1, one line, nothing changed) when they are no agent, disabled, or not allowed."""
    return _authorize(session.connection(), command=command)


def acting(engine: Engine, *, command: str) -> Engine:
    """`engine`, whose every transaction starts by authorizing `command` again: an admin who
    disables an agent, or takes their role away, while one of their commands runs, stops its
    next transaction. On SQLite the check is inside the transaction's write lock (BEGIN
    IMMEDIATE), so no change of the agent's can come between it and the commit."""
    return engine.execution_options(**{_COMMAND: command})


_COMMAND = "cpms_authorized_command"  # in an engine's execution options (`acting`)
_IDENTITY = "cpms_identity"  # in a database connection's info: who logged in


@event.listens_for(Session, "after_begin")
def _still_allowed(session: Session, transaction: object, conn: Connection) -> None:
    command = conn.get_execution_options().get(_COMMAND)
    if command is not None:
        _authorize(conn, command=command)


def _authorize(conn: Connection, *, command: str) -> Actor:
    name = _who(conn)
    found = select(Agent.role, Agent.disabled_at, Agent.disabled_reason).where(Agent.name == name)
    agent = conn.execute(found).first()
    if agent is None:
        raise Refused(
            f"not allowed: {name!r} is not an agent of this database "
            f"(an admin adds them: cpms-admin agent add {name} --role support)"
        )
    if agent.disabled_at is not None:
        raise Refused(f"not allowed: agent {name!r} is disabled ({agent.disabled_reason})")
    role = Role(agent.role)
    duty = COMMAND_DUTIES.get(command)
    if duty is None or not may(role, duty):
        needs = f"needs {least_role_for(duty)}" if duty else "is not in the rights table"
        raise Refused(f"not allowed: {command} {needs} ({name} is {role})")
    return Actor(name=name, role=role)


@dataclass(frozen=True)
class ListedAgent:
    """A line of `agent list`."""

    agent: Agent

    def as_json(self) -> dict[str, object]:
        agent = self.agent
        return {
            "name": agent.name,
            "role": agent.role,
            "added_at": iso(agent.added_at),
            "added_by": agent.added_by,
            "disabled_at": iso(agent.disabled_at),
            "disabled_reason": agent.disabled_reason,
        }


def list_agents(session: Session) -> list[ListedAgent]:
    return [ListedAgent(agent) for agent in session.exec(select(Agent).order_by(col(Agent.name)))]


@dataclass(frozen=True)
class AgentChange:
    name: str
    role: Role
    before: str | None  # the role it had ("disabled" for a disabled agent), None when new
    after: str  # the same, now

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "before": self.before,
            "changed": self.changed,
        }


def add_agent(
    session: Session,
    *,
    name: str,
    role: Role,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> AgentChange:
    """Add `name` with `role`, or give an existing agent that role (enabling them again),
    recording `reason` when given. Adding an agent who already has the role changes
    nothing, and is audited as a `noop` (with the reason), as every agent action is."""
    name = _agent_name(name)
    check_reserved(name, role)
    if reason is not None:  # refused as input even when there is nothing to do
        reason = audit.clean_text(reason, what="the reason", max_length=audit.REASON_MAX_LENGTH)
    with transaction(session):
        agent = _lock(session, name)
        before = None if agent is None else _state(agent)
        if before == role:
            audit.record(
                session, agent=actor, action=AuditAction.agent_add, reason=reason,
                outcome="noop", at=now, name=name, role=role, before=before,
            )  # fmt: skip
            return AgentChange(name, role, before, before)
        if agent is None:
            agent = Agent(name=name, role=role, added_at=now, added_by=actor)
        else:
            _keep_an_admin(session, agent, losing=role != Role.admin)
            agent.role, agent.disabled_at, agent.disabled_reason = role, None, None
        session.add(agent)
        if session.get_bind().dialect.name == "postgresql":
            grants.check_login_role(session.connection(), name)
            grants.grant_membership(session.connection(), name=name, role=role)
        audit.record(
            session,
            agent=actor,
            action=AuditAction.agent_add,
            reason=reason,
            at=now,
            name=name,
            role=role,
            before=before,
        )
    return AgentChange(name, role, before, role)


def check_reserved(name: str, role: Role) -> None:
    """Refused for a staff role under the name the member's own requests are recorded by
    (audit.PORTAL): that agent's codes and letters would pass for the member's."""
    if name == audit.PORTAL and role != Role.portal:
        raise Refused(
            f"the name {name!r} is reserved for the portal's own identity (role portal): a "
            f"{role} under it would make the member seem to ask for what they did"
        )


def disable_agent(
    session: Session, *, name: str, reason: str, actor: str, now: datetime
) -> AgentChange:
    """Disable `name`: every command refuses them from now on (their audit trail stays).
    Disabling them again changes nothing, and is audited as a `noop` with the reason."""
    name = _agent_name(name)
    with transaction(session):
        agent = _lock(session, name)
        failpoint("agents.locked")
        if agent is None:
            raise NotFound(f"no agent {name!r} (cpms-admin agent list shows them)")
        reason = audit.clean_text(reason, what="the reason", max_length=audit.REASON_MAX_LENGTH)
        before = _state(agent)
        if agent.disabled_at is None:
            _keep_an_admin(session, agent, losing=True)
            agent.disabled_at, agent.disabled_reason = now, reason
            session.add(agent)
            if session.get_bind().dialect.name == "postgresql":
                grants.revoke_membership(session.connection(), name=name)
        audit.record(
            session,
            agent=actor,
            action=AuditAction.agent_disable,
            reason=reason,
            outcome="ok" if before != "disabled" else "noop",
            at=now,
            name=name,
        )
    return AgentChange(name, Role(agent.role), before, _state(agent))


def _agent_name(name: str) -> str:
    """`name` as `agent add` stores it and `agent disable` finds it."""
    return audit.clean_name(name, what="the agent name", max_length=audit.AGENT_MAX_LENGTH)


def _lock(session: Session, name: str) -> Agent | None:
    """Lock the enabled admins, in name order, then agent `name`. Every change takes its locks
    in this order: two admins disabling each other at once would otherwise each hold the row
    the other's last-admin check must lock, and PostgreSQL would abort one with a deadlock."""
    admins = select(Agent.name).where(Agent.role == Role.admin, col(Agent.disabled_at).is_(None))
    session.exec(admins.order_by(Agent.name).with_for_update()).all()
    return session.get(Agent, name, with_for_update=True)


def _state(agent: Agent) -> str:
    return "disabled" if agent.disabled_at is not None else agent.role


def _keep_an_admin(session: Session, agent: Agent, *, losing: bool) -> None:
    """Refuse to disable or demote the last enabled admin who can act: nobody could manage
    agents again. On SQLite an admin added ahead of their OS account (or under a name no
    account has, `DAEMON` for `daemon`) cannot act yet, so does not count."""
    if not losing or agent.role != Role.admin or agent.disabled_at is not None:
        return
    admins = select(Agent.name).where(
        Agent.role == Role.admin, col(Agent.disabled_at).is_(None), Agent.name != agent.name
    )
    others = session.exec(admins.with_for_update()).all()
    if session.get_bind().dialect.name == "sqlite":  # PostgreSQL's are login roles, checked
        others = [name for name in others if os_user_exists(name)]
    if not others:
        raise Refused(f"{agent.name} is the last admin: add another admin first")
