"""The printed letter batches `purge` deletes: `batch-<id>-<time>/` under the directory each
was printed to (`letters/files.py`), and the manifest stored with the batch for the run that
publishes it, which names each letter's member by a masked NIR. Both go.

Entries are checked and handled as `purge_files` says for every file purge deletes, and
what is the batch's own is decided from the stored manifest, never from the files on disk:
the PDFs it lists, the index and the manifest, each a plain file of ours. Before the event
is committed, a batch directory is renamed whole to `.batch-<id>.expired`, so that nothing
half deleted ever looks like a batch to the print house; its own files move from there into
`.batch-<id>.ours`, and the directory, holding only what was not ours (a print house's
receipt, an agent's note, a link), is renamed back (or removed, empty). After the commit
`.batch-<id>.ours` is deleted. A run killed on the way is finished by the next one: the
batch is still due, its stored manifest still there.
"""

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import ScalarSelect, func, or_, update
from sqlmodel import col, select

from cpms_admin.credentials.codes import live_at
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput
from cpms_admin.faults import failpoint
from cpms_admin.letters.files import INDEX, MANIFEST, published_dir, staging_dir
from cpms_admin.models import Letter, LetterBatch, SecurityCode, pk
from cpms_admin.privacy.purge_files import OURS, entry_kind
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.private_files import describe_entry, directory_fd
from cpms_admin.vocabulary import BatchStatus, RetentionCategory

BATCH_RULE = Rule(
    "no live code left in them, or printed more than {days} ago",
    "retention_batch_files_days",
)
_PUT_ASIDE = re.compile(r"\.batch-(\d+)\.expired")  # a due batch's directory, renamed whole
_OURS_ASIDE = re.compile(r"\.batch-(\d+)\.ours")  # its own files, to delete


@contextmanager
def _opened(where: Path, skipped: list[str]) -> Iterator[int | None]:
    """`directory_fd(where)` for a batch's output directory; one that cannot be trusted any
    more is reported in `skipped` and its batches wait (the others need not)."""
    with ExitStack() as stack:
        try:
            dir_fd = stack.enter_context(directory_fd(where))
        except InvalidInput as exc:
            skipped.append(f"{exc}: left alone")
            dir_fd = None
        yield dir_fd


@dataclass(frozen=True)
class _Batch:
    """A due batch's directory in its output directory, and what its batch published there
    (from the stored manifest)."""

    id: int
    name: str
    published: frozenset[str]

    @property
    def expired(self) -> str:
        return f".batch-{self.id}.expired"

    @property
    def ours(self) -> str:
        return f".batch-{self.id}.ours"


@dataclass
class _Batches:
    ids: set[int] = field(default_factory=set)  # whose stored manifest goes
    directories: dict[Path, list[_Batch]] = field(default_factory=dict)  # by output directory
    outputs: list[Path] = field(default_factory=list)  # every directory batches were printed to
    waiting: set[int] = field(default_factory=set)  # due, left alone this time (`skipped`)
    printed: list[datetime] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def found(self) -> Found:
        return Found(len(self.ids), min(self.printed, default=None), tuple(self.skipped))


def _live_codes(now: datetime) -> ScalarSelect[int]:
    """How many codes printed in a batch still work (pending and unexpired, as
    `credentials.codes` counts a live code)."""
    return (
        select(func.count())
        .select_from(SecurityCode)
        .join(Letter, col(Letter.id) == col(SecurityCode.letter_id))
        .where(
            col(Letter.batch_id) == col(LetterBatch.id),
            live_at(now),
        )
        .scalar_subquery()
    )


def _due_batches(scope: Scope, before: datetime) -> _Batches:
    """The completed batches whose files are due (those not dropped yet keep their stored
    manifest), by output directory."""
    rows = scope.session.exec(
        select(LetterBatch)
        .where(
            col(LetterBatch.status) == BatchStatus.completed,
            col(LetterBatch.manifest).is_not(None),
            or_(col(LetterBatch.finished_at) < before, _live_codes(scope.now) == 0),
        )
        .order_by(col(LetterBatch.id))  # what is skipped is reported in batch order
    ).all()
    out_dirs = {Path(out) for out in scope.session.exec(select(LetterBatch.out_dir).distinct())}
    due = _Batches(outputs=sorted(out_dirs))
    for out in due.outputs:
        with _opened(out, due.skipped) as dir_fd:
            for batch in (batch for batch in rows if Path(batch.out_dir) == out):
                _add_batch(due, dir_fd, out, batch)
    due.waiting = {pk(row) for row in rows} - due.ids
    return due


@contextmanager
def _subdirectory(dir_fd: int, name: str) -> Iterator[int]:
    """A descriptor of the directory `name` in `dir_fd`, never reached through a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _not_ours(folder_fd: int, batch: _Batch) -> dict[str, str | None]:
    """The entries of a batch's directory its batch did not publish: name -> what it is (OURS
    for a plain file of ours, as `entry_kind` says)."""
    kinds = {
        entry: entry_kind(folder_fd, entry, directory=False) for entry in os.listdir(folder_fd)
    }
    return {
        entry: kind
        for entry, kind in sorted(kinds.items())
        if entry not in batch.published or kind != OURS
    }


def _say_what_stays(folder_fd: int, batch: _Batch, shown_as: Path, skipped: list[str]) -> None:
    """Say, once, here so that the survey says it too, what stays of a batch's directory."""
    others = _not_ours(folder_fd, batch)
    if not others:
        return
    shown = [
        entry if kind in (OURS, None) else f"{entry} ({kind})"
        for entry, kind in list(others.items())[:3]
    ]
    more = f" and {len(others) - 3:,} more" if len(others) > 3 else ""
    skipped.append(
        f"{shown_as} also holds what cpms-admin did not write ({', '.join(shown)}{more}): "
        "left alone, and the directory with it"
    )


def _add_batch(due: _Batches, dir_fd: int | None, out: Path, row: LetterBatch) -> None:
    assert row.id is not None and row.manifest is not None and row.finished_at
    manifest = json.loads(row.manifest)
    published = [entry["name"] for entry in manifest["files"]] + [INDEX, MANIFEST]
    batch = _Batch(row.id, published_dir(out, manifest).name, frozenset(published))
    if dir_fd is not None:
        for name in (batch.name, batch.expired, batch.ours):
            kind = entry_kind(dir_fd, name, directory=True)
            if kind not in (None, OURS):
                due.skipped.append(f"{out / name} is {kind}: left alone")
                return
    staging = staging_dir(out, row.id)
    if dir_fd is not None and entry_kind(dir_fd, staging.name, directory=True) is not None:
        # Committed, not published yet: `letters batch` publishes it first, from the stored
        # manifest, which must stay until then.
        due.skipped.append(f"{staging} is not published yet: left for letters batch")
        return
    if dir_fd is None and describe_entry(out) is not None:  # not trusted (reported): it waits
        return
    if dir_fd is None:  # said once: the stored manifest goes, the batch is not seen again
        due.skipped.append(f"{out} no longer exists: batch {row.id}'s files were not there")
    due.ids.add(row.id)
    due.printed.append(row.finished_at)
    if dir_fd is None:
        return
    due.directories.setdefault(out, []).append(batch)
    for name in (batch.name, batch.expired):  # the directory, or where a killed run put it
        if entry_kind(dir_fd, name, directory=True) == OURS:
            with _subdirectory(dir_fd, name) as folder_fd:
                _say_what_stays(folder_fd, batch, out / batch.name, due.skipped)


def survey_batch_files(scope: Scope, before: datetime) -> Found:
    return _due_batches(scope, before).found()


def _put_aside(dir_fd: int, batch: _Batch) -> None:
    """Take a batch's own files out of the print house's sight into `batch.ours`: its
    directory renamed whole to `batch.expired`, its own files moved from there, the rest
    renamed back (or the directory removed, empty). Each step is finished by a later run if
    this one is killed: the batch is due until the event is committed."""
    if entry_kind(dir_fd, batch.name, directory=True) == OURS:
        # A killed run's first: its own name is taken, so this fails, loudly, if not empty.
        _sort_out_expired(dir_fd, batch)
        os.rename(batch.name, batch.expired, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    _sort_out_expired(dir_fd, batch)


def _sort_out_expired(dir_fd: int, batch: _Batch) -> None:
    """If `batch.expired` is there: its own files into `batch.ours`, the rest given back."""
    if entry_kind(dir_fd, batch.expired, directory=True) == OURS:
        _take_ours(dir_fd, batch)
        _give_back(dir_fd, batch)


def _take_ours(dir_fd: int, batch: _Batch) -> None:
    with suppress(FileExistsError):  # a killed run's (checked by `_add_batch`)
        os.mkdir(batch.ours, 0o700, dir_fd=dir_fd)
    with _subdirectory(dir_fd, batch.expired) as source, _subdirectory(dir_fd, batch.ours) as ours:
        for name in batch.published:
            if entry_kind(source, name, directory=False) == OURS:
                os.rename(name, name, src_dir_fd=source, dst_dir_fd=ours)
        os.fsync(ours)
        os.fsync(source)


def _give_back(dir_fd: int, batch: _Batch) -> None:
    """What is left in `batch.expired` (not ours) goes back under the batch's name."""
    try:
        os.rmdir(batch.expired, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        os.rename(batch.expired, batch.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def drop_batch_files(scope: Scope, before: datetime, rule: str) -> Found:
    due = _due_batches(scope, before)
    for out, batches in due.directories.items():  # 1. out of the print house's sight
        with _opened(out, due.skipped) as dir_fd:
            if dir_fd is None:
                continue
            for batch in batches:
                _put_aside(dir_fd, batch)
            os.fsync(dir_fd)
    failpoint("purge.batches_renamed")
    found = due.found()
    with transaction(scope.session):  # 2. the stored manifests, and the event
        if due.ids:
            scope.session.execute(
                update(LetterBatch)
                .where(col(LetterBatch.id).in_(sorted(due.ids)))
                .values(manifest=None)
            )
        category = RetentionCategory.batch_files
        record_category(
            scope, category, rule=rule, before=before, found=found, batch_ids=sorted(due.ids)
        )
    for out in due.outputs:  # 3. the files themselves, this run's and a killed run's
        with _opened(out, []) as dir_fd:
            if dir_fd is not None:
                _delete_put_aside(dir_fd, waiting=due.waiting)
    return found


def _delete_put_aside(dir_fd: int, *, waiting: set[int]) -> None:
    """Delete the batches' own files put aside: a `.ours` directory holds nothing else. A
    `.expired` one is left by an older version (which deleted it whole, as here) or by a
    run killed before giving back what was not ours, which `_put_aside` has finished for
    every due batch but those left alone this time (`waiting`): theirs stay."""
    for name in os.listdir(dir_fd):
        aside = _OURS_ASIDE.fullmatch(name) or _PUT_ASIDE.fullmatch(name)
        if aside is None or entry_kind(dir_fd, name, directory=True) != OURS:
            continue
        if aside.re is _OURS_ASIDE or int(aside[1]) not in waiting:
            shutil.rmtree(name, dir_fd=dir_fd)
    os.fsync(dir_fd)
