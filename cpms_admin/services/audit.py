"""The audit log: who did what to which member, why, when, and how it ended."""

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.clock import iso, system_clock
from cpms_admin.models import AuditEvent, Member
from cpms_admin.nir import parse_nir


def record(
    session: Session,
    *,
    agent: str,
    action: str,
    member: Member | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    at: datetime | None = None,
    **details: Any,
) -> AuditEvent:
    """Add an audit row to the caller's transaction (never commits: it lands with the change)."""
    event = AuditEvent(
        at=at or system_clock(),
        agent=agent,
        action=action,
        member_id=member.id if member else None,
        reason=reason,
        outcome=outcome,
        details=json.dumps(details, ensure_ascii=False, sort_keys=True, default=str),
    )
    session.add(event)
    return event


def list_events(
    session: Session,
    *,
    nir: str | None = None,
    since: datetime | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first, as the JSON objects `audit list` prints."""
    query = select(AuditEvent, Member.nir).join(Member, isouter=True)
    if nir is not None:
        query = query.where(Member.nir == parse_nir(nir))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    query = query.order_by(col(AuditEvent.id).desc()).limit(limit)
    return [
        {
            "id": event.id,
            "at": iso(event.at),
            "agent": event.agent,
            "action": event.action,
            "nir": member_nir,
            "reason": event.reason,
            "outcome": event.outcome,
            "details": json.loads(event.details),
        }
        for event, member_nir in session.exec(query)
    ]
