"""The printed letter batches `purge` deletes: `batch-<id>-<time>/` under the directory each
was printed to (`letters/files.py`), and the manifest stored with the batch for the run that
publishes it, which names each letter's member by a masked NIR. Both go.

Entries are checked and handled as `purge_files` says for every file purge deletes. A batch
directory is first renamed whole to `.batch-<id>.expired`, so that nothing half deleted ever
looks like a batch to the print house; once the event is committed, what the batch did not
publish (a print house's receipt, an agent's note: anything but the PDFs its manifest lists,
the index and the manifest) goes back into a directory of the batch's name, made again, and
the rest is deleted. The manifest goes last, so a run killed on the way leaves a leftover
the next run finishes, giving back what is not ours as this one would have.
"""

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


@dataclass
class _Batches:
    ids: set[int] = field(default_factory=set)  # whose stored manifest goes
    directories: dict[Path, dict[str, str]] = field(default_factory=dict)  # out -> name -> trash
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
    is only emptied: the batch it was is due (still listed) if the purge that renamed it
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
            for name in sorted(os.listdir(dir_fd)):
                if _EXPIRED.fullmatch(name) and entry_kind(dir_fd, name, directory=True) == OURS:
                    due.directories.setdefault(out, {})[name] = name
                    with _subdirectory(dir_fd, name) as trash_fd:
                        if (manifest := _own_manifest(trash_fd)) is not None:
                            shown_as = published_dir(out, manifest)
                            _say_what_stays(trash_fd, manifest, shown_as, due.skipped)
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


def _published_files(manifest: dict[str, Any]) -> list[str]:
    """What `letters/files.py` wrote in a batch's directory, the manifest last."""
    return [entry["name"] for entry in manifest["files"]] + [INDEX, MANIFEST]


def _not_ours(folder_fd: int, manifest: dict[str, Any]) -> dict[str, str | None]:
    """The entries of a batch's directory its publication did not write: name -> what it is
    (OURS for a plain file of ours, as `entry_kind` says). A name with a `/` is never one."""
    published = set(_published_files(manifest))
    kinds = {
        entry: entry_kind(folder_fd, entry, directory=False) for entry in os.listdir(folder_fd)
    }
    return {
        entry: kind
        for entry, kind in sorted(kinds.items())
        if entry not in published or kind != OURS
    }


def _say_what_stays(
    folder_fd: int, manifest: dict[str, Any], shown_as: Path, skipped: list[str]
) -> None:
    """Say, once, here so that the survey says it too, what stays of a batch's directory."""
    others = _not_ours(folder_fd, manifest)
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


def _own_manifest(folder_fd: int) -> dict[str, Any] | None:
    """The manifest in a batch's directory, if it is our own readable file."""
    if entry_kind(folder_fd, MANIFEST, directory=False) != OURS:
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(MANIFEST, flags, dir_fd=folder_fd), "rb") as file:
            manifest = json.loads(file.read())
        _published_files(manifest)  # the shape this program writes
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest if isinstance(manifest, dict) else None


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
        with _subdirectory(dir_fd, name) as folder_fd:
            _say_what_stays(folder_fd, manifest, out / name, due.skipped)
        due.directories.setdefault(out, {})[name] = f".batch-{batch.id}.expired"


def survey_batch_files(scope: Scope, before: datetime) -> Found:
    return _due_batches(scope, before).found()


def _empty_trash(dir_fd: int, trash: str) -> None:
    """Delete a batch directory put aside as `trash`, giving back first what its batch did
    not publish, into a directory of the batch's name (made again, 0700). The manifest that
    names both stays until the trash goes whole, so a run killed half-way is finished by the
    next one; a leftover without it holds nothing but ours (or is an older version's)."""
    with _subdirectory(dir_fd, trash) as trash_fd:
        manifest = _own_manifest(trash_fd)
        others = [] if manifest is None else list(_not_ours(trash_fd, manifest))
        if manifest is not None and others:
            name = published_dir(Path(), manifest).name
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                if entry_kind(dir_fd, name, directory=True) != OURS:
                    raise InvalidInput(f"{name} is in the way of what {trash} gives back") from None
            with _subdirectory(dir_fd, name) as back_fd:
                for entry in others:
                    os.rename(entry, entry, src_dir_fd=trash_fd, dst_dir_fd=back_fd)
                os.fsync(back_fd)
            os.fsync(trash_fd)
    shutil.rmtree(trash, dir_fd=dir_fd)


def drop_batch_files(scope: Scope, before: datetime, rule: str) -> Found:
    due = _due_batches(scope, before)
    for out, names in due.directories.items():  # 1. out of the print house's sight
        with _opened(out, due.skipped) as dir_fd:
            if dir_fd is None:
                continue
            for name, trash in names.items():
                if name == trash or entry_kind(dir_fd, name, directory=True) != OURS:
                    continue  # a leftover, or no longer ours: checked again
                if entry_kind(dir_fd, trash, directory=True) == OURS:  # an older leftover
                    _empty_trash(dir_fd, trash)
                os.rename(name, trash, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
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
    for out, names in due.directories.items():  # 3. the files themselves
        with _opened(out, []) as dir_fd:
            for trash in names.values():
                if dir_fd is not None and entry_kind(dir_fd, trash, directory=True) == OURS:
                    _empty_trash(dir_fd, trash)
            if dir_fd is not None:
                os.fsync(dir_fd)
    return found
