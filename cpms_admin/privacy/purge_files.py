"""The files `purge` deletes: e-mail files in the outbox, and printed letter batches.

Both hold live codes while they are young, and personal data (names, addresses) always.
Only this program's own entries are touched, found by name in a directory opened once and
checked as every directory we write in (`private_files.directory_fd`); everything is done
by name relative to that descriptor, and no link is ever followed: a link planted in the
outbox or where a batch directory should be is neither followed nor deleted, only reported
(`skipped`), as is anything else that is not our own file or directory (or our group's
file: the outbox a group of agents shares holds each agent's e-mails).

Deleting files is not transactional, so the category's event is committed before anything
is deleted: a run killed in between leaves files that the next run deletes (and records),
never a deletion the audit log does not tell. A batch directory is first renamed to
`.batch-<id>.expired`, so that nothing half deleted ever looks like a batch to the print
house; the next run finishes such a leftover.
"""

import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import ScalarSelect, func, or_, update
from sqlmodel import col, select

from cpms_admin.credentials.codes import live_at
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput
from cpms_admin.faults import failpoint
from cpms_admin.letters.files import published_dir, staging_dir
from cpms_admin.models import Letter, LetterBatch, SecurityCode
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.private_files import describe_entry, directory_fd, is_teams
from cpms_admin.vocabulary import BatchStatus, RetentionCategory

MAIL_RULE = Rule("written more than {days} ago", "retention_mail_files_days")
BATCH_RULE = Rule(
    "no live code left in them, or printed more than {days} ago",
    "retention_batch_files_days",
)
# `mail/transport.FileTransport`'s names, and the temporary names `private_files` gives them
# while they are written (a write killed half-way): `20261123T090000123456Z-1a2b3c4d.eml`.
_EML = re.compile(r"(\d{8}T\d{12}Z)-[0-9a-f]{8}\.eml")
_EML_TEMPORARY = re.compile(r"\.(\d{8}T\d{12}Z)-[0-9a-f]{8}\.eml\.[0-9a-f]{8}\.tmp")
_EXPIRED = re.compile(r"\.batch-(\d+)\.expired")
OURS = "ours"


def _entry(dir_fd: int, name: str, *, directory: bool) -> str | None:
    """OURS when `name` is our own regular file (or directory), None when there is nothing
    there, else what it is, in words."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    wanted = stat.S_ISDIR if directory else stat.S_ISREG
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not wanted(info.st_mode):
        return "a file" if stat.S_ISREG(info.st_mode) else "a directory or special file"
    # A file of our group's is ours to delete (the e-mails in an outbox agents share); a
    # directory is only ours if we made it: we could not empty another's.
    if info.st_uid != os.geteuid() and (directory or not is_teams(info)):
        return f"another user's (uid {info.st_uid})"
    return OURS


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


# E-mail files: they hold a code that lives minutes, and the member's name and address.
def _written_at(name: str) -> datetime | None:
    match = _EML.fullmatch(name) or _EML_TEMPORARY.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:  # no moment (a 30 February): a name this program never gave
        return None


def _old_mail(
    dir_fd: int, before: datetime, where: Path, skipped: list[str]
) -> dict[str, datetime]:
    """Our e-mail files in the directory written before `before`: name -> when."""
    found = {}
    for name in sorted(os.listdir(dir_fd)):
        written = _written_at(name)
        if written is None or written >= before:
            continue
        kind = _entry(dir_fd, name, directory=False)
        if kind == OURS:
            found[name] = written
        elif kind is not None:
            skipped.append(f"{where / name} is {kind}: left alone")
    return found


# The outbox is one directory, the configured one: if it cannot be trusted (a link, another
# user's), the category fails, loudly, rather than skip it night after night.
def survey_mail_files(scope: Scope, before: datetime) -> Found:
    where, skipped = scope.settings.outbox, list[str]()
    with directory_fd(where) as dir_fd:
        old = {} if dir_fd is None else _old_mail(dir_fd, before, where, skipped)
    return Found(len(old), min(old.values(), default=None), tuple(skipped))


def drop_mail_files(scope: Scope, before: datetime, rule: str) -> Found:
    where, skipped = scope.settings.outbox, list[str]()
    with directory_fd(where) as dir_fd:
        old = {} if dir_fd is None else _old_mail(dir_fd, before, where, skipped)
        found = Found(len(old), min(old.values(), default=None), tuple(skipped))
        with transaction(scope.session):
            category = RetentionCategory.mail_files
            record_category(scope, category, rule=rule, before=before, found=found)
        for name in old:
            assert dir_fd is not None
            if _entry(dir_fd, name, directory=False) == OURS:  # still: checked again
                os.unlink(name, dir_fd=dir_fd)
        if dir_fd is not None and old:
            os.fsync(dir_fd)
    return found


# Printed batches: `batch-<id>-<time>/` under the directory each was printed to
# (`letters/files.py`), and the manifest stored with the batch for the run that publishes it,
# which names each letter's member by a masked NIR. Both go.
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
    is only deleted: the batch it was is due (still listed) if the purge that renamed it
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
                if _EXPIRED.fullmatch(name) and _entry(dir_fd, name, directory=True) == OURS:
                    due.directories.setdefault(out, {})[name] = name
    return due


def _add_batch(due: _Batches, dir_fd: int | None, out: Path, batch: LetterBatch) -> None:
    assert batch.id is not None and batch.manifest is not None and batch.finished_at
    name = published_dir(out, json.loads(batch.manifest)).name
    kind = None if dir_fd is None else _entry(dir_fd, name, directory=True)
    if kind not in (None, OURS):
        due.skipped.append(f"{out / name} is {kind}: left alone")
        return
    staging = staging_dir(out, batch.id)
    if dir_fd is not None and _entry(dir_fd, staging.name, directory=True) is not None:
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
        due.directories.setdefault(out, {})[name] = f".batch-{batch.id}.expired"


def survey_batch_files(scope: Scope, before: datetime) -> Found:
    return _due_batches(scope, before).found()


def drop_batch_files(scope: Scope, before: datetime, rule: str) -> Found:
    due = _due_batches(scope, before)
    for out, names in due.directories.items():  # 1. out of the print house's sight
        with _opened(out, due.skipped) as dir_fd:
            for name, trash in names.items():
                if dir_fd is None or name == trash:
                    continue
                if _entry(dir_fd, name, directory=True) != OURS:  # checked again
                    continue
                if _entry(dir_fd, trash, directory=True) == OURS:  # an older leftover
                    shutil.rmtree(trash, dir_fd=dir_fd)
                os.rename(name, trash, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            if dir_fd is not None:
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
                if dir_fd is not None and _entry(dir_fd, trash, directory=True) == OURS:
                    shutil.rmtree(trash, dir_fd=dir_fd)
            if dir_fd is not None:
                os.fsync(dir_fd)
    return found
