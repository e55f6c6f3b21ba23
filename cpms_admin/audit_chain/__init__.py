"""The audit log as a chain (docs/audit.md): each event sealed with a keyed hash that covers
the hash of the event before it, so that an event changed, deleted or slipped in is found.

- `seal`: appending, at the commit of each transaction that writes events; the keys
  (`keyed` for an engine, `use_keys` for a session); the events from before the chain.
- `verify`: `audit verify`, the walk of the database's chain (`verify_chain`).
- `archive`: retention, `archive_events` then re-anchor (`purge` calls it); an archive
  file checked on its own (`verify_archive`).
"""

from cpms_admin.audit_chain.archive import (
    archivable,
    archive_events,
    archive_events_into,
    remove_killed_archives,
    verify_archive,
)
from cpms_admin.audit_chain.seal import KeySource, keyed, seal_waiting, use_keys
from cpms_admin.audit_chain.verify import ChainReport, verify_chain

__all__ = [
    "ChainReport",
    "KeySource",
    "archivable",
    "archive_events",
    "archive_events_into",
    "keyed",
    "remove_killed_archives",
    "seal_waiting",
    "use_keys",
    "verify_archive",
    "verify_chain",
]
