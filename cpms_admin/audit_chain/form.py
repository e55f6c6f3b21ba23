"""What an event's hash is computed over, and with which key.

An event's hash is HMAC-SHA256, keyed from a pepper, of its canonical form: a JSON object of
every column of `audit_event` but its place (`seq`) and `hash` itself, in the order of their
names, NULL columns left out, datetimes as UTC ISO text to the microsecond. The columns are
the table's, so a column added later is covered without a change here; leaving NULLs out
keeps the events sealed before it valid (a later migration must add columns nullable, with
no server default). `prev_hash` is covered, which makes the chain: an event relinked, or
moved to another place, no longer follows the one before it. `seq` is left out so that
`audit verify` can tell an event moved (it still matches its hash, not its place) from one
changed; `key_id` picks the key, so changing it breaks the hash too.

The key is derived from the pepper `key_id` names (HMAC of a fixed label), so the pepper
itself never keys anything but PINs and codes, and `pepper rotate` moves the chain to a new
key while the events sealed with an older one stay checkable with its line of the file.
"""

import functools
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table

from cpms_admin.errors import NotReady
from cpms_admin.models import AuditChain, AuditEvent
from cpms_admin.pepper import Peppers

GENESIS = "0" * 64  # what the first event of a new chain names as the hash before it
EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
HEAD: Table = AuditChain.__table__  # type: ignore[attr-defined]
# The columns each seal covers, in the fixed order of their names.
EVENT_FIELDS = tuple(sorted(c.name for c in EVENTS.columns if c.name not in ("seq", "hash")))
HEAD_FIELDS = tuple(sorted(column.name for column in HEAD.columns if column.name != "mac"))
_EVENT_LABEL = b"cpms-audit-chain-v1:event"
_HEAD_LABEL = b"cpms-audit-chain-v1:head"


def plain(value: Any) -> Any:
    """A column's value as its canonical form (and the archive) writes it."""
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"an audit column holds a {type(value).__name__}: add its canonical form")


@functools.lru_cache(maxsize=64)  # a batch's events share their moment
def _moment(value: datetime) -> str:
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(values: Mapping[str, Any], fields: tuple[str, ...] = EVENT_FIELDS) -> bytes:
    """The bytes a seal covers: `fields` of `values`, NULLs left out, as compact ASCII JSON."""
    present = {name: value for name in fields if (value := values.get(name)) is not None}
    return _ENCODER.encode(present).encode("ascii")


# `default` is only called for what JSON has no word for (datetimes): str and int stay on the
# C encoder's fast path. Made once: json.dumps with options builds one per call.
_ENCODER = json.JSONEncoder(default=plain, ensure_ascii=True, separators=(",", ":"))


class Keyring:
    """The chain's keys, one per pepper at hand; new seals use the current pepper's."""

    def __init__(self, peppers: Peppers) -> None:
        self.peppers = peppers
        self._keys: dict[tuple[int, bytes], bytes] = {}

    @property
    def current_id(self) -> int:
        return self.peppers.current_id

    def has(self, key_id: int) -> bool:
        return key_id in self.peppers.secrets

    def could_have_sealed(self, key_id: object) -> bool:
        """Whether `key_id` names a pepper of this database, at hand or not: 1 to the
        current one. Any other value (0, a word) was written by hand."""
        return type(key_id) is int and 1 <= key_id <= self.current_id

    def _key(self, key_id: int, label: bytes) -> bytes:
        key = self._keys.get((key_id, label))
        if key is None:
            key = hmac.digest(self.peppers.get(key_id), label, hashlib.sha256)
            self._keys[(key_id, label)] = key
        return key

    def event_hash(self, key_id: int, message: bytes) -> str:
        return hmac.digest(self._key(key_id, _EVENT_LABEL), message, hashlib.sha256).hex()

    def event_key(self, key_id: int) -> bytes:
        """The key `event_hash` uses, for `hash_with` in a loop over many events."""
        return self._key(key_id, _EVENT_LABEL)

    @staticmethod
    def hash_with(key: bytes, message: bytes) -> str:
        return hmac.digest(key, message, hashlib.sha256).hex()

    def head_mac(self, key_id: int, head: Mapping[str, Any]) -> str:
        message = canonical(head, HEAD_FIELDS)
        return hmac.digest(self._key(key_id, _HEAD_LABEL), message, hashlib.sha256).hex()


def head_is_authentic(keys: Keyring, head: Mapping[str, Any]) -> bool:
    """Whether the head is as the chain last sealed it. An unsealed head is only accepted as
    migration 0011 leaves it: an empty chain at its genesis (events to seal at most)."""
    if head["mac"] is None or head["key_id"] is None:
        return (head["seq"], head["anchor_seq"], head["hash"], head["anchor_hash"]) == (
            0,
            0,
            GENESIS,
            GENESIS,
        )
    if not keys.could_have_sealed(head["key_id"]):
        return False  # no pepper made it: forged
    if not keys.has(head["key_id"]):
        raise missing_key(head["key_id"])
    return hmac.compare_digest(keys.head_mac(head["key_id"], head), head["mac"])


def missing_key(key_id: int) -> NotReady:
    return NotReady(
        f"audit events were sealed with pepper {key_id}, which the pepper file no longer "
        "holds: put its line back (from the backup of the pepper file) to check them"
    )
