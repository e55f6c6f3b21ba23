"""Checking one import row, without the database: the same validation as `member add`, the
status columns, the carried-over PIN hash, and NIRs repeated inside the file.

The status columns (`status`, `closed_reason`, `closed_at`): a closed member exports as
closed, with why and when, and imports back so (with no welcome letter). A file without
these columns imports members active, as before. An import never changes the status of a
member already there: with `--on-conflict update`, a row whose status columns differ from
the member's is refused (status_change). Closing is `member close`, which also revokes
codes and cancels letters; nothing reopens a member.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from cpms_admin import audit
from cpms_admin.bulk.formats import RowError, SourceRow
from cpms_admin.bulk.rows import PIN_HASH
from cpms_admin.clock import iso
from cpms_admin.credentials.pins import LEGACY_PREFIX, legacy_hash_problem
from cpms_admin.errors import FieldError, InvalidInput
from cpms_admin.members import damage
from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.nir import format_nir
from cpms_admin.members.records import member_values
from cpms_admin.vocabulary import MemberStatus


@dataclass(frozen=True, slots=True)
class CheckedRow:
    """A valid row: the `member` table values (search column included, and the status
    columns, all None when the file gives no status) and the PIN hash to store, already
    prefixed as a legacy hash."""

    line: int
    member: dict[str, object]
    pin_hash: str | None = field(repr=False)

    @property
    def nir(self) -> str:
        return cast(str, self.member["nir"])


class RowChecker:
    """Checks rows in file order, remembering each NIR's first valid line: a second row for
    the same member is refused (which of the two is right cannot be guessed)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self.civilities_recorded = 0  # valid rows whose civility is recorded as another (Mlle)

    def check(self, row: SourceRow) -> CheckedRow | RowError:
        values = row.values
        if values is None:
            return RowError(row.line, None, row.problem or "unreadable record", None)
        try:
            fields = validate_member_fields(values)
            status = parse_status(values)
        except FieldError as exc:
            return RowError(row.line, exc.field, str(exc), values)
        except InvalidInput as exc:
            return RowError(row.line, None, str(exc), values)
        raw_hash = values.get(PIN_HASH)
        if raw_hash:
            problem = legacy_hash_problem(raw_hash)
            if problem is not None:
                return RowError(row.line, PIN_HASH, problem, values)
        first = self._seen.setdefault(fields.nir, row.line)
        if first != row.line:
            reason = f"NIR {format_nir(fields.nir)} is already on line {first} of this file"
            return RowError(row.line, "nir", reason, values)
        pin_hash = LEGACY_PREFIX + raw_hash if raw_hash else None
        if fields.civility_typed:
            self.civilities_recorded += 1
        return CheckedRow(row.line, {**member_values(fields), **status}, pin_hash)


NOT_GIVEN: dict[str, object] = {"status": None, "closed_reason": None, "closed_at": None}


def parse_status(values: Mapping[str, str | None]) -> dict[str, object]:
    """The row's status columns, checked, as `member` table values; all None (NOT_GIVEN)
    when the row has no status."""
    status = (values.get("status") or "").strip().lower()
    reason = (values.get("closed_reason") or "").strip()
    moment = (values.get("closed_at") or "").strip()
    if status not in ("", *MemberStatus):
        raise FieldError("status", f"status must be active or closed, got {status!r}")
    if status != MemberStatus.closed:
        if reason or moment:
            field = "closed_reason" if reason else "closed_at"
            raise FieldError(field, f"{field} is for a closed member: give status closed")
        return {**NOT_GIVEN, "status": status or None}
    if not reason:
        raise FieldError("closed_reason", "a closed member needs closed_reason: why")
    if not moment:
        raise FieldError("closed_at", "a closed member needs closed_at: when, in ISO 8601")
    try:
        why = audit.clean_text(reason, what="closed_reason", max_length=audit.REASON_MAX_LENGTH)
    except InvalidInput as exc:
        raise FieldError("closed_reason", str(exc)) from None
    return {"status": MemberStatus.closed, "closed_reason": why, "closed_at": _moment(moment)}


def _moment(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        reason = damage.date_damage(raw, what="closed_at")
        raise FieldError(
            "closed_at",
            reason or f"closed_at {raw!r} must be an ISO 8601 time, e.g. 2026-01-31T09:30:00+00:00",
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def status_change(stored: Mapping[str, object], given: Mapping[str, object]) -> str | None:
    """Why a row with the status columns `given` may not update a member whose columns are
    `stored`; None when the row gives no status, or the same one (times to the second)."""
    if given["status"] is None:
        return None
    same = given["status"] == stored["status"] and (
        given["status"] == MemberStatus.active
        or (
            given["closed_reason"] == stored["closed_reason"]
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


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
