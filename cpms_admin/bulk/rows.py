"""The records that flow between the bulk readers, the importer and the error report."""

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cpms_admin.members.fields import COLUMNS

PIN_HASH = "pin_hash"
# A closed member stays closed through an export and an import (see import_rows.py).
STATUS_COLUMNS = ("status", "closed_reason", "closed_at")
# What export writes: the member's fields, then their status.
EXPORT_COLUMNS = (*COLUMNS, *STATUS_COLUMNS)
# Import accepts a PIN hash carried over from the previous system; export never writes it.
IMPORT_COLUMNS = (*EXPORT_COLUMNS, PIN_HASH)
# The extra columns of an error report (see writers.py); a report re-imports once fixed.
REPORT_COLUMNS = ("line", "field", "reason")


def column_name(raw: str) -> str:
    """Column names are matched case-insensitively, ignoring surrounding spaces."""
    return raw.strip().lower()


def clean_value(raw: str) -> str | None:
    """Office files pad values with spaces; an empty cell means "no value"."""
    value = raw.strip()
    return value or None


def _masked(values: Mapping[str, str | None] | None) -> object:
    """A copy safe for repr(): the PIN hash is a secret even when hashed."""
    if values is None or values.get(PIN_HASH) is None:
        return values
    return {**values, PIN_HASH: "***"}


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One record of an import file.

    `line` is the physical line where the record starts (1-based; a CSV header is line 1),
    or a workbook's row number. `values` has a key for every name in COLUMNS (None when
    absent or empty), plus the STATUS_COLUMNS and `pin_hash` the file has. When the record
    cannot be read whole, `problem` says why and the importer counts it invalid and goes on;
    `values` is then what could be read (a workbook row with one unreadable cell: the
    others, for the `--errors` report) or None. `absent` names the COLUMNS the record does
    not have at all (a column the file lacks, a key a JSON line leaves out), unlike an empty
    value: an update keeps the member's values there.
    """

    line: int
    values: dict[str, str | None] | None
    problem: str | None = None
    absent: tuple[str, ...] = ()
    field: str | None = None  # the column the problem is in, when it is one cell's

    def __repr__(self) -> str:
        return (
            f"SourceRow(line={self.line}, values={_masked(self.values)!r}, "
            f"problem={self.problem!r}, absent={self.absent!r}, field={self.field!r})"
        )


def absent_from(names: Collection[str]) -> tuple[str, ...]:
    """The COLUMNS not among `names` (a header, a JSON line's keys)."""
    return tuple(name for name in COLUMNS if name not in names)


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one record was refused, with its original values for the `--errors` report."""

    line: int
    field: str | None
    reason: str
    values: Mapping[str, str | None] | None

    def __repr__(self) -> str:
        return (
            f"RowError(line={self.line}, field={self.field!r}, reason={self.reason!r}, "
            f"values={_masked(self.values)!r})"
        )
