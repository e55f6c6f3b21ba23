"""The audit log as a chain (docs/audit.md): each event sealed with a keyed hash that covers
the hash of the event before it, so that an event changed, deleted or slipped in is found.

- `seal`: appending, at the commit of each transaction that writes events; the keys
  (`keyed` for an engine, `use_keys` for a session); the events from before the chain.
- `verify`: `audit verify`, on the database (`verify_chain`) or an archive file.
- `archive`: retention, `archive_events` then re-anchor (`purge` calls it).
"""

from cpms_admin.audit_chain.archive import archivable, archive_events
from cpms_admin.audit_chain.seal import KeySource, keyed, seal_waiting, use_keys
from cpms_admin.audit_chain.verify import ChainReport, verify_archive, verify_chain

__all__ = [
    "ChainReport",
    "KeySource",
    "archivable",
    "archive_events",
    "keyed",
    "seal_waiting",
    "use_keys",
    "verify_archive",
    "verify_chain",
]
