"""The printed letter batches `purge` deletes: `batch-<id>-<time>/` under the directory each
was printed to (`letters/files.py`), and the manifest stored with the batch for the run that
publishes it, which names each letter's member by a masked NIR. Both go.

Entries are checked and handled as `purge_files` says for every file purge deletes. A batch
directory's own files (what `letters/files.py` published: the PDFs its manifest lists, the
manifest, the index) are first moved into `.batch-<id>.expired`, the PDFs first so that none
is ever left without the manifest that lists it, and the directory goes once empty; the next
run finishes such a leftover. Anything else in a batch directory (a print house's receipt,
an agent's note) is not ours: it stays, the directory with it, and `skipped` says so.
"""

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ScalarSelect, func, or_, update
from sqlmodel import col, select

from cpms_admin.credentials.codes import live_at
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput
from cpms_admin.faults import failpoint
from cpms_admin.letters.files import INDEX, MANIFEST, published_dir, staging_dir
from cpms_admin.models import Letter, LetterBatch, SecurityCode
from cpms_admin.privacy.purge_files import OURS, entry_kind
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.private_files import describe_entry, directory_fd
from cpms_admin.vocabulary import BatchStatus, RetentionCategory

BATCH_RULE = Rule(
    "no live code left in them, or printed more than {days} ago",
    "retention_batch_files_days",
)
_EXPIRED = re.compile(r"\.batch-(\d+)\.expired")


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
class _Folder:
    """A directory to purge: where its files go first (`.batch-<id>.expired`), and which of
    them are the batch's own, in the order they go. A leftover of an interrupted purge is its
    own trash, deleted whole: nothing but a batch's own files is ever moved into one."""

    trash: str
    ours: tuple[str, ...] = ()


@dataclass
class _Batches:
    ids: set[int] = field(default_factory=set)  # whose stored manifest goes
    directories: dict[Path, dict[str, _Folder]] = field(default_factory=dict)  # by out, name
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
    manifest), and the leftovers of an interrupted purge, by output directory. A leftover
    is only deleted: the batch it was is due (still listed) if the purge that made it
    was killed before recording it, and done with otherwise; its name alone is no batch."""
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
    due = _Batches()
    for out in sorted(out_dirs):
        with _opened(out, due.skipped) as dir_fd:
            for batch in (batch for batch in rows if Path(batch.out_dir) == out):
                _add_batch(due, dir_fd, out, batch)
            if dir_fd is None:
                continue
            for name in os.listdir(dir_fd):
                if _EXPIRED.fullmatch(name) and entry_kind(dir_fd, name, directory=True) == OURS:
                    due.directories.setdefault(out, {})[name] = _Folder(trash=name)
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


def _batch_files(
    dir_fd: int, name: str, manifest: dict[str, Any], where: Path, skipped: list[str]
) -> tuple[str, ...]:
    """The files of the batch directory `name` that its publication wrote, in the order they
    go: the PDFs its manifest lists, then the index and the manifest. Only names found in
    the directory count (a name with a `/` in it is never one). Anything else stays, and so
    does the directory: said once, here, so that the survey says it too."""
    listed = [entry["name"] for entry in manifest["files"]] + [INDEX, MANIFEST]
    with _subdirectory(dir_fd, name) as folder_fd:
        kinds = {
            entry: entry_kind(folder_fd, entry, directory=False) for entry in os.listdir(folder_fd)
        }
    ours = tuple(entry for entry in listed if kinds.get(entry) == OURS)
    others = sorted(set(kinds) - set(ours))
    if others:
        shown = [
            entry if kinds[entry] in (OURS, None) else f"{entry} ({kinds[entry]})"
            for entry in others[:3]
        ]
        more = f" and {len(others) - 3:,} more" if len(others) > 3 else ""
        skipped.append(
            f"{where / name} also holds what cpms-admin did not write ({', '.join(shown)}"
            f"{more}): left alone, and the directory with it"
        )
    return ours


def _add_batch(due: _Batches, dir_fd: int | None, out: Path, batch: LetterBatch) -> None:
    assert batch.id is not None and batch.manifest is not None and batch.finished_at
    manifest = json.loads(batch.manifest)
    name = published_dir(out, manifest).name
    kind = None if dir_fd is None else entry_kind(dir_fd, name, directory=True)
    if kind not in (None, OURS):
        due.skipped.append(f"{out / name} is {kind}: left alone")
        return
    staging = staging_dir(out, batch.id)
    if dir_fd is not None and entry_kind(dir_fd, staging.name, directory=True) is not None:
        # Committed, not published yet: `letters batch` publishes it first, from the stored
        # manifest, which must stay until then.
        due.skipped.append(f"{staging} is not published yet: left for letters batch")
        return
    if dir_fd is None and describe_entry(out) is not None:  # not trusted (reported): it waits
        return
    if dir_fd is None:  # said once: the stored manifest goes, the batch is not seen again
        due.skipped.append(f"{out} no longer exists: batch {batch.id}'s files were not there")
    due.ids.add(batch.id)
    due.printed.append(batch.finished_at)
    if kind == OURS:
        assert dir_fd is not None
        ours = _batch_files(dir_fd, name, manifest, out, due.skipped)
        folder = _Folder(trash=f".batch-{batch.id}.expired", ours=ours)
        due.directories.setdefault(out, {})[name] = folder


def survey_batch_files(scope: Scope, before: datetime) -> Found:
    return _due_batches(scope, before).found()


def _put_aside(dir_fd: int, name: str, folder: _Folder) -> None:
    """Move the batch's own files from the directory `name` into its trash (that of a run
    killed half-way, or a new one), then remove the directory if nothing else is left in it."""
    try:
        os.mkdir(folder.trash, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        if entry_kind(dir_fd, folder.trash, directory=True) != OURS:
            raise
    with _subdirectory(dir_fd, name) as source, _subdirectory(dir_fd, folder.trash) as trash:
        for file in folder.ours:
            if entry_kind(source, file, directory=False) == OURS:  # checked again
                os.rename(file, file, src_dir_fd=source, dst_dir_fd=trash)
        os.fsync(trash)
        os.fsync(source)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as exc:  # what is not ours keeps it (`_batch_files` said so)
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def drop_batch_files(scope: Scope, before: datetime, rule: str) -> Found:
    due = _due_batches(scope, before)
    for out, folders in due.directories.items():  # 1. out of the print house's sight
        with _opened(out, due.skipped) as dir_fd:
            if dir_fd is None:
                continue
            for name, folder in folders.items():
                if name != folder.trash and entry_kind(dir_fd, name, directory=True) == OURS:
                    _put_aside(dir_fd, name, folder)  # checked again, just above
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
    for out, folders in due.directories.items():  # 3. the files themselves
        with _opened(out, []) as dir_fd:
            for folder in folders.values():
                if dir_fd is not None and entry_kind(dir_fd, folder.trash, directory=True) == OURS:
                    shutil.rmtree(folder.trash, dir_fd=dir_fd)
            if dir_fd is not None:
                os.fsync(dir_fd)
    return found
