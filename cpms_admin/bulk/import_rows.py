"""Checking one import row, without the database: the same validation as `member add`, the
status columns, the carried-over PIN hash, and NIRs repeated inside the file.

The status columns (`status`, `closed_reason`, `closed_at`): a closed member exports as
closed, with why and when, and imports back so (with no welcome letter). A file without
these columns imports members active, as before. An import never changes the status of a
member already there: with `--on-conflict update`, a row whose status columns differ from
the member's is refused (status_change), and the columns a record lacks keep the member's
values (with_stored). Closing is `member close`, which also revokes
codes and cancels letters; nothing reopens a member.

A record that lacks columns is judged whole only against the member it updates: a file
without `country` gives a Belgian member's postcode, which is wrong for France. Such a row,
invalid as it stands, is a PendingRow: an update judges it again with the member's values;
otherwise it is refused with the reason found here (with `--on-conflict fail`, a member
already there is the conflict). It takes no NIR from a valid row of the same member.
"""

import pickle
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, cast

from cpms_admin import audit
from cpms_admin.bulk.formats import RowError, SourceRow
from cpms_admin.bulk.rows import PIN_HASH, STATUS_COLUMNS
from cpms_admin.clock import iso
from cpms_admin.credentials.pins import LEGACY_PREFIX, legacy_hash_problem
from cpms_admin.errors import FieldError, InvalidInput
from cpms_admin.members import damage
from cpms_admin.members.fields import COLUMNS, validate_member_fields
from cpms_admin.members.nir import format_nir, parse_nir
from cpms_admin.members.records import (
    MEMBER_COLUMNS,
    as_strings,
    member_row,
    validate_stored_member,
)
from cpms_admin.vocabulary import MemberStatus

# The `member` table's values of a checked row, in this order (the NIR first).
MEMBER_KEYS = (*MEMBER_COLUMNS, *STATUS_COLUMNS)
# Fields judged with another: the address by its country, the envelope's name line (refused
# under `last_name`) by the line an agent chose. A record without the other column is
# judged again with the member's value of it (PendingRow).
_JUDGED_WITH = {
    "country": (
        "street",
        "address_complement",
        "postcode",
        "city",
        "address_building",
        "locality",
    ),
    "envelope_name": ("last_name",),
}


class CheckedRow(NamedTuple):
    """A valid row: the `member` table values in MEMBER_KEYS order (search columns included,
    and the status columns, all None when the file gives no status) and the PIN hash to
    store, already prefixed as a legacy hash; `absent` as the record's (SourceRow). Tuples
    rather than a dict or a dataclass: a million of them cross from the checker process by
    pickle, and new members go to the database as tuples."""

    line: int
    values: tuple[object, ...]
    pin_hash: str | None
    absent: tuple[str, ...]
    civility_typed: bool = False  # the row gave a civility recorded as another (Mlle)

    def __repr__(self) -> str:  # the PIN hash is a secret even when hashed
        return f"CheckedRow(line={self.line}, values={self.values!r})"

    @property
    def member(self) -> dict[str, object]:
        """The values by column name (made at each call)."""
        return dict(zip(MEMBER_KEYS, self.values, strict=True))

    @property
    def nir(self) -> str:
        return cast(str, self.values[0])

    @property
    def status(self) -> object:
        return self.values[_STATUS_AT]


_STATUS_AT = MEMBER_KEYS.index("status")


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A row invalid as it stands (`error`), from a record that lacks columns whose stored
    values may make it valid: its NIR, status and PIN hash are checked; `values` are the
    record's."""

    line: int
    nir: str
    values: Mapping[str, str | None]
    status: tuple[object, object, object]
    pin_hash: str | None
    absent: tuple[str, ...]
    error: RowError

    def __repr__(self) -> str:  # the PIN hash is a secret even when hashed
        return f"PendingRow(line={self.line}, error={self.error!r})"

    @property
    def member(self) -> dict[str, object]:
        """The values by column name, as CheckedRow.member gives them."""
        given: dict[str, object] = {name: self.values.get(name) for name in COLUMNS}
        return given | dict(zip(STATUS_COLUMNS, self.status, strict=True))


Checked = CheckedRow | PendingRow | RowError


class RowChecker:
    """Checks rows in file order, remembering each NIR's first valid line: a second row for
    the same member is refused (which of the two is right cannot be guessed). The NIRs
    seen are kept in a temporary file (SeenNirs), so memory stays flat for any file. Rows
    that only their member's values could make valid are held (`held`) unless `hold` is
    False (`--on-conflict skip` reads no member): then refused in their place in the file."""

    def __init__(self, *, now: datetime, hold: bool = True) -> None:
        self._seen = SeenNirs()
        self._now = now
        self._hold = hold

    def check_batch(self, rows: Sequence[SourceRow]) -> list[CheckedRow | RowError]:
        """The rows checked, in order; those repeating an earlier row's NIR refused, and the
        pending ones held (`held`)."""
        results = [self._check(row) for row in rows]
        firsts: dict[str, int] = {}  # each NIR's first valid line in this batch
        for result in results:
            if isinstance(result, CheckedRow):
                firsts.setdefault(result.nir, result.line)
        earlier = self._seen.claim(firsts)
        pending = [result for result in results if isinstance(result, PendingRow)]
        if pending:  # rare: rows refused as they stand
            self._seen.hold(pending)
        for at, result in enumerate(results):
            if not isinstance(result, CheckedRow):
                continue
            first = earlier.get(result.nir) or firsts[result.nir]
            if first != result.line:
                reason = f"NIR {format_nir(result.nir)} is already on line {first} of this file"
                results[at] = RowError(result.line, "nir", reason, rows[at].values)
        return [result for result in results if not isinstance(result, PendingRow)]

    def held(self, size: int) -> Iterator[list[PendingRow | RowError]]:
        """Once every row was checked, the pending rows in batches of `size`: the first of a
        member no valid row names (it takes no member from one, before or after it), the
        others refused with their own reasons. Judged last, each against a member no other
        row of the file changes, so a dry run counts what the run does."""
        return self._seen.held(size)

    def _check(self, row: SourceRow) -> Checked:
        values = row.values
        if values is None or row.problem is not None:
            return RowError(row.line, row.field, row.problem or "unreadable record", values)
        try:
            fields = validate_member_fields(values)
        except FieldError as exc:
            error = RowError(row.line, exc.field, str(exc), values)
            if self._hold:
                return _pending_or_refused(row, values, error, self._now)
            return error
        except InvalidInput as exc:
            return RowError(row.line, None, str(exc), values)
        rest = _status_and_hash(row.line, values, self._now)
        if isinstance(rest, RowError):
            return rest
        status, pin_hash = rest
        member = (*member_row(fields), *status)
        return CheckedRow(row.line, member, pin_hash, row.absent, bool(fields.civility_typed))

    def close(self) -> None:
        self._seen.close()


def _status_and_hash(
    line: int, values: Mapping[str, str | None], now: datetime
) -> tuple[tuple[object, object, object], str | None] | RowError:
    """The row's status columns (parse_status) and PIN hash to store, or why not."""
    try:
        status = parse_status(values, now=now)
    except FieldError as exc:
        return RowError(line, exc.field, str(exc), values)
    raw_hash = values.get(PIN_HASH)
    if raw_hash:
        problem = legacy_hash_problem(raw_hash)
        if problem is not None:
            return RowError(line, PIN_HASH, problem, values)
    return status, LEGACY_PREFIX + raw_hash if raw_hash else None


def _pending_or_refused(
    row: SourceRow, values: Mapping[str, str | None], error: RowError, now: datetime
) -> PendingRow | RowError:
    """A row refused for `error` is pending when the member's values of the columns it
    lacks may make it valid (the field refused, or the one it is judged with, is one of
    them), and its NIR, status and PIN hash hold."""
    field = error.field or ""
    if field not in row.absent and not any(
        column in row.absent and field in judged for column, judged in _JUDGED_WITH.items()
    ):
        return error
    try:
        nir = parse_nir(values.get("nir") or "")
    except FieldError:
        return error
    rest = _status_and_hash(row.line, values, now)
    if isinstance(rest, RowError):
        return rest
    status, pin_hash = rest
    return PendingRow(row.line, nir, values, status, pin_hash, row.absent, error)


def with_hash(values: dict[str, str | None], pin_hash: str | None) -> dict[str, str | None]:
    """A refused row's values as rebuilt, with the PIN hash the row carried: the report
    leaves it out, and says which rows had one."""
    return {**values, PIN_HASH: pin_hash} if pin_hash else values


def with_stored(
    row: CheckedRow | PendingRow, stored: Mapping[str, object]
) -> CheckedRow | RowError:
    """An update's row with the member's `stored` values in the columns the record lacks (a
    column the file lacks changes nothing, but for an envelope name chosen for a name the row
    changes; an empty cell clears its field), checked again as a whole: a file without
    `country` may not validate the street and postcode it gives against the member's
    country."""
    given = row.member
    values = as_strings(
        {name: stored[name] if name in row.absent else given[name] for name in COLUMNS}
    )
    try:
        fields = validate_stored_member(
            as_strings(stored), values, envelope_given="envelope_name" not in row.absent
        )
    except FieldError as exc:
        return RowError(row.line, exc.field, str(exc), with_hash(values, row.pin_hash))
    status = tuple(given[name] for name in STATUS_COLUMNS)
    member = (*member_row(fields), *status)
    return CheckedRow(row.line, member, row.pin_hash, (), bool(fields.civility_typed))


class SeenNirs:
    """The NIRs of a file's valid rows, each with the line it was first on, and the pending
    rows held until the end, in a private temporary SQLite file (gone when closed): a dict
    of a million NIRs took 100 MiB, this takes SQLite's page cache. Looked up and added a
    batch at a time, each NIR as an integer key (the rowid: several times cheaper to insert
    than text)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)  # "": a private temporary file
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (nir INTEGER PRIMARY KEY, line INTEGER)")
        self._holding = False  # the table of held rows made

    def claim(self, first_lines: Mapping[str, int]) -> dict[str, int]:
        """Remember each NIR of `first_lines` with its line, unless seen before: those are
        returned, with the line they were first seen on. (A repeat is rare: all are
        inserted, and only when some were already there is the table asked which.)"""
        keys = {_key(nir): nir for nir in first_lines}
        before = self._db.total_changes
        rows = sorted((key, first_lines[nir]) for key, nir in keys.items())
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", rows)
        if self._db.total_changes - before == len(rows):
            return {}
        earlier: dict[str, int] = {}
        wanted = list(keys)
        for at in range(0, len(wanted), _LOOKUP):
            chunk = wanted[at : at + _LOOKUP]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT nir, line FROM seen WHERE nir IN ({marks})"  # noqa: S608 (marks)
            for key, line in self._db.execute(query, chunk):
                nir = keys[key]
                if line != first_lines[nir]:  # not this batch's own, just inserted
                    earlier[nir] = line
        return earlier

    def hold(self, rows: Sequence[PendingRow]) -> None:
        """Keep `rows` until every valid row was seen (`held`)."""
        if not self._holding:
            self._db.execute("CREATE TABLE held (line INTEGER PRIMARY KEY, nir INTEGER, row BLOB)")
            # Each member's first held line, found per row: without it, a scan per row.
            self._db.execute("CREATE INDEX held_nir ON held (nir, line)")
            self._holding = True
        self._db.executemany(
            "INSERT INTO held VALUES (?, ?, ?)",
            [(row.line, _key(row.nir), pickle.dumps(row)) for row in rows],
        )

    def held(self, size: int) -> Iterator[list[PendingRow | RowError]]:
        """The rows held, in file order and batches of `size`: each the first of its member,
        if no valid row names the member; the others refused with their own reasons."""
        if not self._holding:
            return
        query = """
            SELECT row, nir IN (SELECT nir FROM seen) OR line > (
                SELECT min(line) FROM held AS first WHERE first.nir = held.nir
            ) FROM held ORDER BY line"""
        cursor = self._db.execute(query)
        while chunk := cursor.fetchmany(size):
            # Our own rows, pickled by this process into its private temporary file.
            rows = [(cast(PendingRow, pickle.loads(data)), taken) for data, taken in chunk]  # noqa: S301
            yield [row.error if taken else row for row, taken in rows]

    def close(self) -> None:
        self._db.close()


_LOOKUP = 10_000  # NIRs a query looks up (SQLite allows 32,766 parameters)
_CORSICA = str.maketrans("AB", "12")


def _key(nir: str) -> int:
    """A compact NIR (15 characters, 2A and 2B for Corsica) as a distinct integer."""
    corsica = "AB".find(nir[6]) + 1  # 0 for a department of digits
    return int(nir.translate(_CORSICA)) * 3 + corsica


_STATUSES = ("", *MemberStatus)
NOT_GIVEN = (None, None, None)


def parse_status(
    values: Mapping[str, str | None], *, now: datetime
) -> tuple[object, object, object]:
    """The row's status columns, checked, as `member` table values in STATUS_COLUMNS order;
    all None (NOT_GIVEN) when the row has no status."""
    if not (values.get("status") or values.get("closed_reason") or values.get("closed_at")):
        return NOT_GIVEN  # most files: no status columns at all
    status = (values.get("status") or "").strip().lower()
    reason = (values.get("closed_reason") or "").strip()
    moment = (values.get("closed_at") or "").strip()
    if status not in _STATUSES:
        raise FieldError("status", f"status must be active or closed, got {status!r}")
    if status != MemberStatus.closed:
        if reason or moment:
            field = "closed_reason" if reason else "closed_at"
            raise FieldError(field, f"{field} is for a closed member: give status closed")
        return (status or None, None, None)
    if not reason:
        raise FieldError("closed_reason", "a closed member needs closed_reason: why")
    if not moment:
        raise FieldError("closed_at", "a closed member needs closed_at: when, in ISO 8601")
    try:
        why = audit.clean_text(reason, what="closed_reason", max_length=audit.REASON_MAX_LENGTH)
    except InvalidInput as exc:
        raise FieldError("closed_reason", str(exc)) from None
    return (MemberStatus.closed, why, _closed_at(moment, now))


# The earliest closing time an import takes: before it, a date is a legacy system's "no
# date" (.NET and SQL Server write 0001-01-01), not when a member left.
_FIRST_CLOSING = datetime(1900, 1, 1, tzinfo=UTC)
# How far ahead of this run's clock the exporting system's clock may have been.
_CLOCKS_APART = timedelta(days=1)


def _closed_at(raw: str, now: datetime) -> datetime:
    """When the member was closed, in UTC: a time in the past (purge counts its retention
    from it), given in ISO 8601."""
    try:
        given = datetime.fromisoformat(raw)
    except ValueError:
        reason = damage.date_damage(raw, what="closed_at")
        raise FieldError(
            "closed_at",
            reason or f"closed_at {raw!r} must be an ISO 8601 time, e.g. 2026-01-31T09:30:00+00:00",
        ) from None
    before = (
        f"closed_at {raw!r} is before 1900: a placeholder for no date, not when the member "
        "was closed"
    )
    ahead = f"closed_at {raw!r} is in the future: give when the member was closed"
    # The years at the calendar's ends first: an offset could carry them past it.
    if given.year < _FIRST_CLOSING.year:
        raise FieldError("closed_at", before)
    if given.year == datetime.max.year:
        raise FieldError("closed_at", ahead)
    moment = given.astimezone(UTC) if given.tzinfo else given.replace(tzinfo=UTC)
    if moment < _FIRST_CLOSING:
        raise FieldError("closed_at", before)
    if moment > now + _CLOCKS_APART:
        raise FieldError("closed_at", ahead)
    return moment


def status_change(stored: Mapping[str, object], given: Mapping[str, object]) -> str | None:
    """Why a row with the status columns `given` may not update a member whose columns are
    `stored`; None when the row gives no status, or the same one (times to the second)."""
    if given["status"] is None:
        return None
    same = given["status"] == stored["status"] and (
        given["status"] == MemberStatus.active
        or (
            given["closed_reason"] == _as_read_back(stored["closed_reason"])
            and iso(_aware(given["closed_at"])) == iso(_aware(stored["closed_at"]))
        )
    )
    if same:
        return None
    if stored["status"] == MemberStatus.closed:
        return (
            f"the member was closed on {iso(_aware(stored['closed_at']))} "
            f"({stored['closed_reason']}): an import does not reopen a member, nor change why "
            "or when they were closed"
        )
    return (
        "the member is active: an import does not close a member (close them with "
        "`cpms-admin member close NIR --reason R`, which also revokes their codes)"
    )


def _as_read_back(reason: object) -> object:
    """A stored reason as an import reads it from an export: without white space at its
    ends, which reasons recorded before `clean_text` took every kind off may still hold (a
    non-breaking space pasted from a word processor)."""
    return reason.strip() if isinstance(reason, str) else reason


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
