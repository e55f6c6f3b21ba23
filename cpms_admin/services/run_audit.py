"""One audit event for a bulk run that commits in batches (import, campaign, mail send).

The event is added with the run's first batch and its counts are brought up to date in
every later batch's transaction, so even a run killed half-way leaves one event that says
exactly what it wrote (outcome `incomplete`), never one event per row.
"""

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from cpms_admin.models import AuditEvent
from cpms_admin.services import audit

INCOMPLETE = "incomplete"


class RunAudit:
    def __init__(
        self, *, agent: str, action: str, at: datetime, reason: str | None = None, **facts: Any
    ) -> None:
        self._agent = agent
        self._action = action
        self._at = at
        self._reason = reason
        self._facts = facts
        self._event: AuditEvent | None = None

    def record(
        self, session: Session, *, counts: Mapping[str, int], outcome: str = INCOMPLETE
    ) -> None:
        """Add or refresh the event in the caller's transaction (the caller commits)."""
        details = {**self._facts, **counts}
        if self._event is None:
            self._event = audit.record(
                session,
                agent=self._agent,
                action=self._action,
                reason=self._reason,
                outcome=outcome,
                at=self._at,
                **details,
            )
            return
        self._event.outcome = outcome
        self._event.details = json.dumps(details, ensure_ascii=False, sort_keys=True, default=str)
        session.add(self._event)
