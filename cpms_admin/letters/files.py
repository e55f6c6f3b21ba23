"""The files of a letters batch, laid out so nothing ever looks finished before it is.

A run renders into `<out>/.batch-<id>.partial/` (mode 0700) as `*.pdf.part` files (0600), so
no `*.pdf` exists while the batch is not committed. Publishing a committed batch writes
`manifest.json` and `index.csv` there first, then renames each `.pdf.part` to `.pdf`, then
renames the directory to `<out>/batch-<id>-<YYYYmmdd-HHMMSS>` (UTC): at every instant, every
`*.pdf` under `<out>` sits beside a manifest that lists it. Each step is idempotent, so a
publication interrupted half-way is finished by the next run. A dead run's directory is first
renamed to `.batch-<id>.discard` (a straggling writer then fails instead of refilling it),
then deleted, only when it bears that run's mark (`MARK`): another database's batch of the
same number, or a folder made by hand at that name, is left alone.

Only this program's own entries are ever touched: a name a batch needs that holds something
else (a file, a link, another user's directory) stops the run with Conflict, naming it, and is
left alone. A committed batch that cannot be published now (a name taken, a full disk) stays
in its staging directory, and the next run publishes it (`recovery`).
"""

import csv
import hashlib
import io
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from cpms_admin.errors import Conflict, Refused, RunFailed
from cpms_admin.faults import failpoint
from cpms_admin.private_files import (
    describe_entry,
    fsync_dir,
    is_own_directory,
    remove_left_behind,
    write_private_atomically,
)

PART = ".part"
# In a staging directory until it is published: which run made it (`run_mark`).
MARK = ".cpms-batch"
MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("file", "first_page", "last_page", "letter_id", "kind", "nir_masked")
_LEFTOVER = re.compile(r"\.batch-(\d+)\.(partial|discard)")


def staging_dir(out: Path, batch_id: int) -> Path:
    return out / f".batch-{batch_id}.partial"


def final_dir(out: Path, batch_id: int, created_at: datetime) -> Path:
    return out / f"batch-{batch_id}-{created_at:%Y%m%d-%H%M%S}"


def published_dir(out: Path, manifest: dict[str, Any]) -> Path:
    """The final directory of the committed batch whose manifest this is."""
    created = datetime.fromisoformat(manifest["created_at"])
    return final_dir(out, manifest["batch_id"], created)


def run_mark(batch_id: int, owner: str, started_at: datetime) -> str:
    """What the run of a batch writes in its staging directory, from the batch's row: two
    databases printing into one folder both have a batch 1, never the same run."""
    return f"batch {batch_id}, run {owner}, started {started_at.isoformat()}\n"


def make_staging(out: Path, batch_id: int, mark: str) -> Path:
    """The batch's private staging directory, new, with the run's `mark`: `out` was checked
    by `private_dir`."""
    staging = staging_dir(out, batch_id)
    try:
        staging.mkdir(mode=0o700)
    except FileExistsError:
        raise Conflict(
            f"batch {batch_id}: {staging} already exists ({describe_entry(staging)}) and is "
            "not this run's; move it away and run letters batch again"
        ) from None
    try:
        os.chmod(staging, 0o700)  # whatever the umask
        fd = os.open(staging / MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, mark.encode())  # a few dozen bytes, in a directory nobody else has
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # unmarked, no run would ever delete it
        raise
    fsync_dir(out)
    return staging


def reserve_file(path: Path) -> None:
    """Create `path` empty and private, so the renderer (which truncates it) never makes it
    readable by others, not even for an instant."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    os.close(os.open(path, flags, 0o600))


def seal_file(path: Path) -> str:
    """Flush a rendered file to disk and return its sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
        os.fsync(data.fileno())
    return digest.hexdigest()


def _write(path: Path, content: bytes) -> None:
    with write_private_atomically(path, new_name=True) as out:
        out.write(content)


def index_csv(manifest: dict[str, Any]) -> bytes:
    """One row per letter with its page range, for print houses that merge the files."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(INDEX_COLUMNS)
    for letter in manifest["letters"]:
        last = letter["first_page"] + letter["page_count"] - 1
        writer.writerow(
            (
                letter["file"],
                letter["first_page"],
                last,
                letter["letter_id"],
                letter["kind"],
                letter["nir_masked"],
            )
        )
    return buffer.getvalue().encode("utf-8")


def check_files(staging: Path, manifest: dict[str, Any]) -> None:
    """Before finishing someone else's publication: every file is there, unchanged."""
    for entry in manifest["files"]:
        path = staging / entry["name"]
        if not path.exists():
            path = staging / (entry["name"] + PART)
        if not path.exists() or seal_file(path) != entry["sha256"]:
            raise RunFailed(
                f"batch {manifest['batch_id']} is committed but {path} is missing or altered; "
                f"its letters cannot be reprinted with the same codes: look at {staging}"
            )


def publish(staging: Path, manifest: dict[str, Any], final: Path) -> Path:
    """Turn the staging directory of a committed batch into the finished batch directory.

    Conflict when a name it needs holds something else, Refused when the disk fails: either
    way the batch stays committed in its staging directory, for the next run to publish.
    """
    batch_id = manifest["batch_id"]
    again = "run letters batch again to publish it"
    if not is_own_directory(staging):
        kind = describe_entry(staging)
        what = "belongs to another user" if kind == "a directory" else f"is {kind or 'missing'}"
        raise Conflict(f"batch {batch_id} is committed but {staging} {what}; {again} as its owner")
    if (taken := describe_entry(final)) is not None:
        raise Conflict(
            f"batch {batch_id} is committed but {final} already exists ({taken}); move it "
            f"away and {again}"
        )
    try:
        for name in (MANIFEST, INDEX):  # what a run killed while writing them left
            remove_left_behind(staging / name, settled_seconds=0)  # no other run writes here
        _write(staging / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2).encode())
        _write(staging / INDEX, index_csv(manifest))
        fsync_dir(staging)
        for number, entry in enumerate(manifest["files"]):
            part = staging / (entry["name"] + PART)
            if part.exists():
                os.rename(part, staging / entry["name"])
            if number == 0:
                failpoint("letters.mid_publish")
        (staging / MARK).unlink(missing_ok=True)  # the print house's folder: only letters
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(final.parent)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        where += f" -> {exc.filename2}" if exc.filename2 else ""
        raise Refused(
            f"batch {batch_id} is committed but could not be published "
            f"({exc.strerror or type(exc).__name__}{where}); {again}"
        ) from None
    return final


def discard(staging: Path, mark: str) -> bool:
    """Delete the directory of a batch that will never be published (its codes were never
    stored, so nothing in it can be used), if it bears its run's `mark`. False when something
    else holds its name, left alone."""
    trash = staging.with_name(staging.name.replace(".partial", ".discard"))
    if _bears(staging, mark):
        if _bears(trash, mark):  # an earlier discard that died half-way
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, trash)
            fsync_dir(staging.parent)
        except OSError:  # the trash name holds something else: delete in place
            trash = staging
    if _bears(trash, mark):
        shutil.rmtree(trash, ignore_errors=True)
    return describe_entry(staging) is None


def _bears(directory: Path, mark: str) -> bool:
    """Whether `directory` is one of this user's that holds `mark` (not through a link)."""
    if not is_own_directory(directory):
        return False
    expected = mark.encode()
    try:
        fd = os.open(directory / MARK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(expected) + 1) == expected
    except OSError:  # a directory or a pipe at that name: no mark
        return False
    finally:
        os.close(fd)


def leftovers(out: Path) -> set[int]:
    """Ids of the batches with a `.partial` or `.discard` directory directly under `out`
    (a directory itself: a link or a file at such a name is not a batch's)."""
    try:
        with os.scandir(out) as entries:
            return {
                int(match[1])
                for entry in entries
                if (match := _LEFTOVER.fullmatch(entry.name))
                and entry.is_dir(follow_symlinks=False)
            }
    except OSError:  # gone, or not ours to read: nothing to recover there
        return set()
