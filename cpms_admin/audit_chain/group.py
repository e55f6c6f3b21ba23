"""Events that differ only by id and member, sealed without a dict for each: a bulk run's
members' events (`RunAudit.record_members`), a million of them for a large import.

Each is sealed exactly as `seal.extend` seals one event (its canonical form, form.py): the
canonical form of the shared columns is made once, with placeholders where the id, the
member and the hash before it go, and each event's is that text with its own three filled
in. The first event of a group is also sealed the long way and compared, so a form that
ever stopped matching would fail loudly rather than write seals `audit verify` refuses.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cpms_admin.audit_chain.form import EVENTS, Keyring, canonical

COLUMNS = tuple(column.name for column in EVENTS.columns)
_VARYING = ("id", "member_id", "seq", "prev_hash", "hash", "key_id")
# No event value holds a control character (audit.clean_text refuses them in the agent,
# the label and the reason; the other columns are the program's own words).
_ID, _MEMBER, _PREV = "\x00id", "\x00member", "\x00prev"


@dataclass(frozen=True)
class EventGroup:
    """Events with the same `shared` columns (every column but the ids and the chain's),
    one for each (id, member id) pair."""

    shared: Mapping[str, Any]
    ids: Sequence[int]
    member_ids: Sequence[int]


def seal_group(
    group: EventGroup, keys: Keyring, key_id: int, seq: int, previous: str
) -> tuple[list[tuple[Any, ...]], int, str]:
    """The group's events sealed as the chain's next ones after (`seq`, `previous`): their
    rows (tuples in COLUMNS order), and the chain's new last seq and hash."""
    template = {**dict.fromkeys(COLUMNS), **group.shared, "key_id": key_id}
    text = canonical({**template, "id": _ID, "member_id": _MEMBER, "prev_hash": _PREV}).decode()
    head, rest = text.split(json.dumps(_ID))
    after_id, rest = rest.split(json.dumps(_MEMBER))
    after_member, tail = rest.split(json.dumps(_PREV))
    key = keys.event_key(key_id)
    base = [template[name] for name in COLUMNS]
    at = {name: COLUMNS.index(name) for name in _VARYING}
    rows: list[tuple[Any, ...]] = []
    for event_id, member_id in zip(group.ids, group.member_ids, strict=True):
        seq += 1
        message = f'{head}{event_id}{after_id}{member_id}{after_member}"{previous}"{tail}'
        digest = keys.hash_with(key, message.encode("ascii"))
        row = base.copy()
        row[at["id"]], row[at["member_id"]], row[at["seq"]] = event_id, member_id, seq
        row[at["prev_hash"]], row[at["hash"]] = previous, digest
        if len(rows) == 0:
            _check_first(keys, key_id, dict(zip(COLUMNS, row, strict=True)), digest)
        rows.append(tuple(row))
        previous = digest
    return rows, seq, previous


def _check_first(keys: Keyring, key_id: int, row: dict[str, Any], digest: str) -> None:
    expected = keys.event_hash(key_id, canonical(row))
    if expected != digest:
        raise AssertionError("the grouped seal differs from the event's own: not written")
