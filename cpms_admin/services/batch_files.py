"""The files of a letters batch, laid out so nothing ever looks finished before it is.

A run renders into `<out>/.batch-<id>.partial/` (mode 0700) as `*.pdf.part` files (0600), so
no `*.pdf` exists while the batch is not committed. Publishing a committed batch writes
`manifest.json` and `index.csv` there first, then renames each `.pdf.part` to `.pdf`, then
renames the directory to `<out>/batch-<id>-<YYYYmmdd-HHMMSS>` (UTC): at every instant, every
`*.pdf` under `<out>` sits beside a manifest that lists it. Each step is idempotent, so a
publication interrupted half-way is finished by the next run. A dead run's directory is first
renamed to `.batch-<id>.discard` (a straggling writer then fails instead of refilling it),
then deleted.
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

from cpms_admin.errors import CpmsError
from cpms_admin.faults import failpoint

PART = ".part"
MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("file", "first_page", "last_page", "letter_id", "kind", "nir_masked")
_LEFTOVER = re.compile(r"\.batch-(\d+)\.(partial|discard)")


def staging_dir(out: Path, batch_id: int) -> Path:
    return out / f".batch-{batch_id}.partial"


def final_dir(out: Path, batch_id: int, created_at: datetime) -> Path:
    return out / f"batch-{batch_id}-{created_at:%Y%m%d-%H%M%S}"


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_staging(out: Path, batch_id: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out, batch_id)
    staging.mkdir(mode=0o700)
    os.chmod(staging, 0o700)  # whatever the umask
    fsync_dir(out)
    return staging


def reserve_file(path: Path) -> None:
    """Create `path` empty and private, so the renderer (which truncates it) never makes it
    readable by others, not even for an instant."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def seal_file(path: Path) -> str:
    """Flush a rendered file to disk and return its sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
        os.fsync(data.fileno())
    return digest.hexdigest()


def write_private(path: Path, content: bytes) -> None:
    """Write `content` to `path` (0600) durably, through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


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
            raise CpmsError(
                f"batch {manifest['batch_id']} is committed but {path} is missing or altered; "
                f"its letters cannot be reprinted with the same codes: look at {staging}"
            )


def publish(staging: Path, manifest: dict[str, Any], final: Path) -> Path:
    """Turn the staging directory of a committed batch into the finished batch directory."""
    write_private(staging / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2).encode())
    write_private(staging / INDEX, index_csv(manifest))
    fsync_dir(staging)
    for number, entry in enumerate(manifest["files"]):
        part = staging / (entry["name"] + PART)
        if part.exists():
            os.rename(part, staging / entry["name"])
        if number == 0:
            failpoint("letters.mid_publish")
    fsync_dir(staging)
    os.rename(staging, final)
    fsync_dir(final.parent)
    return final


def discard(staging: Path) -> None:
    """Delete the directory of a batch that will never be published (its codes were never
    stored, so nothing in it can be used)."""
    trash = staging.with_name(staging.name.replace(".partial", ".discard"))
    if staging.exists():
        os.rename(staging, trash)
        fsync_dir(staging.parent)
    shutil.rmtree(trash, ignore_errors=True)


def leftovers(out: Path) -> set[int]:
    """Ids of the batches with a `.partial` or `.discard` directory directly under `out`."""
    try:
        entries = list(out.iterdir())
    except OSError:  # gone, or not ours to read: nothing to recover there
        return set()
    return {
        int(match[1])
        for entry in entries
        if (match := _LEFTOVER.fullmatch(entry.name)) and entry.is_dir()
    }
