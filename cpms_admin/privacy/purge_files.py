"""The files `purge` deletes: e-mail files in the outbox here, printed letter batches in
`purge_batches`; and the check both make of every entry before touching it.

Both hold live codes while they are young, and personal data (names, addresses) always.
Only this program's own entries are touched, found by name in a directory opened once and
checked as every directory we write in (`private_files.directory_fd`); everything is done
by name relative to that descriptor, and no link is ever followed: a link planted in the
outbox or where a batch directory should be is neither followed nor deleted, only reported
(`skipped`), as is anything else that is not our own file or directory (or our group's
file: the outbox a group of agents shares holds each agent's e-mails).

Deleting files is not transactional, so the category's event is committed before anything
is deleted: a run killed in between leaves files that the next run deletes (and records),
never a deletion the audit log does not tell.
"""

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

from cpms_admin.db import transaction
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.private_files import directory_fd, is_teams
from cpms_admin.vocabulary import RetentionCategory

MAIL_RULE = Rule("written more than {days} ago", "retention_mail_files_days")
# `mail/transport.FileTransport`'s names, and the temporary names `private_files` gives them
# while they are written (a write killed half-way): `20261123T090000123456Z-1a2b3c4d.eml`.
_EML = re.compile(r"(\d{8}T\d{12}Z)-[0-9a-f]{8}\.eml")
_EML_TEMPORARY = re.compile(r"\.(\d{8}T\d{12}Z)-[0-9a-f]{8}\.eml\.[0-9a-f]{8}\.tmp")
OURS = "ours"


def entry_kind(dir_fd: int, name: str, *, directory: bool) -> str | None:
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
        kind = entry_kind(dir_fd, name, directory=False)
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
            if entry_kind(dir_fd, name, directory=False) == OURS:  # still: checked again
                os.unlink(name, dir_fd=dir_fd)
        if dir_fd is not None and old:
            os.fsync(dir_fd)
    return found
