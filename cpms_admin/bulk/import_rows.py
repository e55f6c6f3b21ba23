"""Checking one import row, without the database: the same validation as `member add`, the
status columns, the carried-over PIN hash, and NIRs repeated inside the file."""

from dataclasses import dataclass, field
from typing import cast

from cpms_admin.bulk.formats import RowError, SourceRow
from cpms_admin.bulk.member_status import parse_status
from cpms_admin.bulk.rows import PIN_HASH
from cpms_admin.credentials.pins import LEGACY_PREFIX, legacy_hash_problem
from cpms_admin.errors import FieldError, InvalidInput
from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.nir import format_nir
from cpms_admin.members.records import member_values


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
        return CheckedRow(row.line, {**member_values(fields), **status}, pin_hash)
