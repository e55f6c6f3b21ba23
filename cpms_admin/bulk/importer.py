"""`members import`: every row through the `member add` validation, written in batches.

Each batch is one transaction: one query finds the NIRs already known, then members, their
accounts and welcome letters go in with bulk Core inserts, with an audit event for each
member created or updated (the run's own event with the first batch, its closing event at
the end: see audit.RunAudit). A
run killed half-way keeps its committed batches, and the same file run again skips them:
every member ends up there once. A dry run is the very same pass with the writes left out,
so its counts and rejected lines are the real ones.
"""

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cpms_admin.audit import RunAudit
from cpms_admin.bulk.formats import MemberFile, RowError
from cpms_admin.bulk.import_rows import (
    Checked,
    CheckedRow,
    PendingRow,
    status_change,
    with_hash,
    with_stored,
)
from cpms_admin.bulk.import_worker import CheckedBatches
from cpms_admin.bulk.import_writes import (
    Existing,
    find_existing,
    insert_members,
    moves,
    one_batch_at_a_time,
    update_members,
)
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials.codes import count_emailed, revoke_emailed
from cpms_admin.db import transaction
from cpms_admin.english import agree, count
from cpms_admin.errors import Conflict, InvalidInput, Refused
from cpms_admin.faults import failpoint
from cpms_admin.letters.voiding import void_printed, would_void
from cpms_admin.members.fields import same_mailbox
from cpms_admin.members.nir import format_nir
from cpms_admin.members.records import as_strings
from cpms_admin.vocabulary import AuditAction, MemberStatus, OnConflict

BATCH_SIZE = 5000
# Allocations between two passes of the garbage collector over its youngest objects, during
# an import (Python's default: 700).
_ALLOCATIONS_PER_COLLECTION = 50_000


@dataclass
class ImportCounts:
    """What a run did (or, dry, would do). `created + updated + skipped + invalid` is the
    number of records read; `welcome_letters` were queued for created members."""

    created: int = 0
    updated: int = 0
    skipped: int = 0
    invalid: int = 0
    welcome_letters: int = 0
    # Letters on their way to the address a moved member left: their codes revoked.
    letters_voided: int = 0
    letters_queued_again: int = 0  # of those, queued again for the new address
    # Codes e-mailed to the address a member's row replaced: revoked.
    emailed_codes_revoked: int = 0
    dry_run: bool = False  # counted only: nothing was written
    civilities_recorded: int = 0  # rows written whose civility was recorded as MME (Mlle)

    @property
    def exit_code(self) -> int:
        """1 when rows were rejected (the others are in), so a script notices."""
        return Refused.exit_code if self.invalid else 0

    def as_dict(self) -> dict[str, int]:
        """The counts, as the run's audit event keeps them."""
        return {
            name: value
            for name, value in asdict(self).items()
            if name not in ("dry_run", "civilities_recorded")  # a note for the agent, not a count
        }

    def as_json(self) -> dict[str, int | bool]:
        """What `members import --json` prints (docs/scripting.md)."""
        return {**self.as_dict(), "dry_run": self.dry_run}


ErrorSink = Callable[[RowError], None]
ProgressSink = Callable[[ImportCounts], None]


def _ignore(_: Any) -> None:
    return None


class _Pass:
    """One pass over the file, writing (`write`) or only counting what it would write."""

    def __init__(
        self,
        session: Session,
        *,
        write: bool,
        on_conflict: OnConflict,
        welcome_letters: bool,
        now: datetime,
        on_error: ErrorSink,
        audit: RunAudit | None,
    ) -> None:
        self.session, self.write, self.on_conflict = session, write, on_conflict
        self.welcome_letters, self.now, self.on_error = welcome_letters, now, on_error
        self.audit = audit
        self.counts = ImportCounts(dry_run=not write)
        self.conflicts: list[CheckedRow | PendingRow] = []

    def feed(self, batch: list[Checked]) -> None:
        """One batch of checked rows: the members they name read, then the batch written in one
        transaction, or in a dry run counted."""
        valid, pending = self._sorted(batch)
        updating = self.on_conflict == OnConflict.update
        nirs = [row.nir for row in valid]
        if self.write:
            one_batch_at_a_time(self.session)  # until the batch's commit, below
        existing = find_existing(
            self.session, nirs + [row.nir for row in pending], with_values=updating
        )
        failpoint("import.batch_read")
        new = [row for row, nir in zip(valid, nirs, strict=True) if nir not in existing]
        known = (
            [row for row, nir in zip(valid, nirs, strict=True) if nir in existing]
            if existing
            else []
        )
        for waiting in pending:
            if waiting.nir not in existing:
                self._refuse(waiting.error)
        there = [waiting for waiting in pending if waiting.nir in existing]
        if updating:
            known = self._updatable([*known, *there], existing)
        changed = {row.nir: existing[row.nir].changed(row) for row in known} if updating else {}
        changes = [row for row in known if changed.get(row.nir)]
        if self.on_conflict == OnConflict.fail and (known or there):
            self._already_there([*known, *there])  # in line order: held rows come last
        welcome = (
            [row for row in new if row.pin_hash is None and not _closed(row)]
            if self.welcome_letters
            else []
        )
        self.counts.created += len(new)
        self.counts.updated += len(changes)
        self.counts.skipped += len(known) - len(changes)
        self.counts.civilities_recorded += sum(row.civility_typed for row in (*new, *changes))
        self.counts.welcome_letters += len(welcome)
        if not self.write:
            self._count_voids(changes, existing)
            self.session.rollback()  # ends the read transaction (and SQLite's lock)
            return
        with transaction(self.session):  # the batch's reads above, its writes, its audit
            try:
                created = insert_members(self.session, new, welcome=welcome, now=self.now)
            except IntegrityError:  # PostgreSQL: `member add` added some of them just now
                raise self._added_meanwhile(valid) from None
            moved = update_members(self.session, changes, existing=existing, now=self.now)
            updated: dict[tuple[str, ...], list[int]] = {}  # by the columns changed
            for row in changes:
                updated.setdefault(changed[row.nir], []).append(existing[row.nir].member_id)
            revoked = revoke_emailed(self.session, _readdressed(changes, existing))
            self.counts.emailed_codes_revoked += len(revoked)
            if self.audit is not None:
                self.audit.record_members(
                    self.session, [member for member, _ in revoked], change="emailed_code_revoked"
                )
            self._record(created=created, updated=updated)
            if moved and self.audit is not None:
                voided = void_printed(
                    self.session, moved, moved=True, agent=self.audit.agent, now=self.now
                )
                self.counts.letters_voided += len(voided)
                self.counts.letters_queued_again += sum(1 for v in voided.values() if v)

    def _sorted(self, batch: list[Checked]) -> tuple[list[CheckedRow], list[PendingRow]]:
        """The valid rows, and those held to be judged again with the member's values: when
        updating; with "fail", the member being there is the conflict; with "skip", refused
        (the member's values are not read). Every other row is refused here."""
        valid: list[CheckedRow] = []
        pending: list[PendingRow] = []
        for result in batch:
            if isinstance(result, CheckedRow):
                valid.append(result)
            elif isinstance(result, PendingRow) and self.on_conflict != OnConflict.skip:
                pending.append(result)
            else:
                self._refuse(result.error if isinstance(result, PendingRow) else result)
        return valid, pending

    def _already_there(self, conflicts: list[CheckedRow | PendingRow]) -> None:
        """With "fail": members already there are the conflicts the check pass reports; once
        writing, one is a member added by someone else since that pass, and stops the run."""
        if self.write:
            first = conflicts[0]
            raise Conflict(
                f"member {format_nir(first.nir)} (line {first.line}) was "
                f"added during the import; {count(self.counts.created, 'member')} "
                f"{agree(self.counts.created, 'was', 'were')} imported before it: run "
                "again with --on-conflict skip to finish"
            )
        self.conflicts.extend(conflicts)

    def _count_voids(self, changes: list[CheckedRow], existing: dict[str, Existing]) -> None:
        """A dry run: the letters the address changes would void and queue again."""
        moving = [existing[row.nir].member_id for row in changes if moves(row, existing[row.nir])]
        if moving:
            would, again = would_void(self.session, moving, now=self.now)
            self.counts.letters_voided += would
            self.counts.letters_queued_again += again
        readdressed = _readdressed(changes, existing)
        self.counts.emailed_codes_revoked += count_emailed(self.session, readdressed)

    def _added_meanwhile(self, valid: list[CheckedRow]) -> Conflict:
        finish = (
            "run again with --on-conflict skip to finish"
            if self.on_conflict == OnConflict.fail
            else "run the same import again to finish"
        )
        return Conflict(
            f"members of lines {valid[0].line}-{valid[-1].line} were added by someone "
            f"else during the import; earlier batches were imported: {finish}"
        )

    def _refuse(self, error: RowError) -> None:
        self.counts.invalid += 1
        self.on_error(error)

    def _updatable(
        self, known: list[CheckedRow | PendingRow], existing: dict[str, Existing]
    ) -> list[CheckedRow]:
        """The rows that may update their member, with the member's values in the columns
        the record lacks; the others are refused: invalid once whole, or changing the
        status."""
        kept = []
        for row in known:
            stored = existing[row.nir].values
            whole = (
                row if isinstance(row, CheckedRow) and not row.absent else with_stored(row, stored)
            )
            if isinstance(whole, RowError):
                self._refuse(whole)
                continue
            problem = status_change(stored, whole.member)
            if problem is None:
                kept.append(whole)
                continue
            values = as_strings({name: whole.member[name] for name in EXPORT_COLUMNS})
            self._refuse(RowError(whole.line, "status", problem, with_hash(values, whole.pin_hash)))
        return kept

    def finish(self, outcome: str, *, at: datetime) -> None:
        """The run's closing audit event: its counts and how it ended."""
        if self.audit is not None:
            with transaction(self.session):
                self.audit.finish(
                    self.session, counts=self.counts.as_dict(), outcome=outcome, at=at
                )

    def _record(self, *, created: list[int], updated: dict[tuple[str, ...], list[int]]) -> None:
        """The run's event with its first batch; one per member the batch created, and one
        per member it updated naming the columns changed (`updated`: by those columns), as
        `member update` does."""
        if self.audit is not None:
            self.audit.start(self.session)
            self.audit.record_members(self.session, created, change="created")
            for columns, member_ids in updated.items():
                self.audit.record_members(
                    self.session, member_ids, change="updated", changed=list(columns)
                )


def _readdressed(changes: list[CheckedRow], existing: dict[str, Existing]) -> list[int]:
    """The members whose rows give them another mailbox (their e-mailed codes go)."""
    return [
        existing[row.nir].member_id
        for row in changes
        if not same_mailbox(_text(existing[row.nir].values["email"]), _text(row.member["email"]))
    ]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _closed(row: CheckedRow) -> bool:
    return row.status == MemberStatus.closed


def _conflict(rows: list[CheckedRow | PendingRow]) -> Conflict:
    first = rows[0]
    return Conflict(
        f"{count(len(rows), 'member')} of the file already "
        f"{agree(len(rows), 'exists', 'exist')}, e.g. {format_nir(first.nir)} "
        f"(line {first.line}); nothing was imported (use --on-conflict skip or update)"
    )


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """An import makes millions of short-lived tuples that hold no reference cycles, and
    the collector's pass every 700 allocations took a tenth of the CPU of both the checker
    and the writer (a million rows: 48 to 44 CPU µs a row on PostgreSQL, bench/scale_bulk.py).
    For the run, a pass every 50,000 allocations (the checker process, forked inside,
    inherits it); as before once the run ends."""
    before = gc.get_threshold()
    gc.set_threshold(_ALLOCATIONS_PER_COLLECTION, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@_fewer_collections()
def import_members(
    session: Session,
    *,
    member_file: MemberFile,
    agent: str,
    on_conflict: str = "skip",
    dry_run: bool = False,
    welcome_letters: bool = False,
    on_error: ErrorSink = _ignore,
    on_progress: ProgressSink = _ignore,
    clock: Clock = system_clock,
    batch_size: int = BATCH_SIZE,
) -> ImportCounts:
    """Import (or, dry, count) the members of `member_file`; see the module docstring.

    `on_error` gets each rejected row, `on_progress` the counts after each batch. With
    `on_conflict="fail"`, a first pass checks that no member exists yet and raises
    Conflict before anything is written.
    """
    try:
        mode = OnConflict(on_conflict)
    except ValueError:
        raise InvalidInput(
            f"--on-conflict must be skip, update or fail, got {on_conflict!r}"
        ) from None
    now = clock()
    options: dict[str, Any] = {
        "on_conflict": mode,
        "welcome_letters": welcome_letters,
        "now": now,
    }
    if mode == OnConflict.fail:
        _refuse_conflicts(session, member_file, batch_size=batch_size, options=options)
    audit = (
        None
        if dry_run
        else RunAudit(
            agent=agent,
            action=AuditAction.members_import,
            at=now,
            file=str(member_file.path),
            format=member_file.fmt,
            on_conflict=on_conflict,
            welcome_letters=welcome_letters,
        )
    )
    run = _Pass(session, write=not dry_run, on_error=on_error, audit=audit, **options)
    hold = mode != OnConflict.skip  # else a row wrong as it stands is refused in its place
    with CheckedBatches(member_file, batch_size=batch_size, now=now, hold=hold) as checked:
        # While the helper checks the first rows: a quote left open near the end must
        # refuse the file before anything is written, not stop an import half-way.
        member_file.check_records()
        for batch in checked:
            run.feed(batch)
            on_progress(run.counts)
    if not dry_run:
        run.finish("partial" if run.counts.invalid else "ok", at=clock())
    return run.counts


def _refuse_conflicts(
    session: Session, member_file: MemberFile, *, batch_size: int, options: dict[str, Any]
) -> None:
    """`--on-conflict fail`'s first pass: Conflict, before anything is written, when a
    member of the file exists already."""
    check = _Pass(session, write=False, on_error=_ignore, audit=None, **options)
    with CheckedBatches(member_file, batch_size=batch_size, now=options["now"]) as checked:
        for batch in checked:
            check.feed(batch)
    if check.conflicts:
        raise _conflict(check.conflicts)
