"""The one call `purge` makes to archive old audit events: `archive_audit_events`.

It belongs to the tamper-evident audit log (issue 16, item 4), which alone may delete audit
events, since deleting them breaks the chain unless it is re-anchored; `purge` never
updates or deletes an audit event itself. Until that log is merged, this stub archives
nothing and refuses, so that `purge` reports the audit category as failed (exit 1) rather
than pretend. `purge --dry-run` counts the events past the period all the same
(`retention.survey_audit_events`).

The contract the real function keeps (`privacy/retention.drop_audit_events` relies on it):

- called outside any transaction of the caller, with `before` an aware UTC datetime and
  `out` the archive directory (`CPMS_AUDIT_ARCHIVE_DIR`, relative to the working directory;
  to be created 0700 if missing, never written through a planted link: `private_files`);
- writes every event with `at < before` to a new archive file under `out` (0600, complete
  before anything is deleted, and enough to verify the chain up to its new anchor), then
  deletes them and re-anchors the chain, in transactions of its own;
- returns how many events it archived and deleted (0: nothing older than `before`);
- on failure raises a `CpmsError` (one line, no secret) and leaves the events in place, or
  a state that the next call finishes.
"""

from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from cpms_admin.errors import NotReady


def archive_audit_events(session: Session, *, before: datetime, out: Path) -> int:
    """Archive the audit events older than `before` into `out`, drop them and re-anchor the
    chain; how many. (Stub until the audit chain is merged: see the module docstring.)"""
    raise NotReady(
        "archiving audit events needs the tamper-evident audit log, which this version does "
        "not have: the events older than the retention period are kept"
    )
