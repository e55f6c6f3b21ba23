"""`letters batch`, the nightly job: every pending letter printed exactly once, even under SIGKILL.

1. Lock (`batch_guard`), then settle what dead runs left (`batch_recovery`).
2. Claim, one transaction: cancel the moot letters, claim the rest for a new running batch.
3. Render into a private staging directory, each letter's code made as it is rendered.
4. Commit, one transaction: store the code hashes, letters printed, batch completed with its
   manifest, audit. The codes work from this instant (they count from when they were made, so
   a code the member was given meanwhile wins), and the duty to publish begins.
5. Publish (`batch_files.publish`): manifest first, then the PDF names, then the directory.

A run killed before 4 leaves a running batch whose letters the next run puts back in the queue
(its files are deleted: their codes were never stored, so they cannot be used). A run killed
after 4 leaves a completed batch whose files the next run publishes as they are.
A letter that cannot be laid out (an address too long for the window) is marked failed with
the reason and the rest of the batch goes on; a rendering error of a whole file abandons the
batch at once (its letters go back to the queue) and the run exits non-zero.
"""

import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock, iso
from cpms_admin.credentials.codes import store_code
from cpms_admin.credentials.pepper import Peppers, load_peppers
from cpms_admin.db import transaction
from cpms_admin.errors import Conflict, CpmsError, InvalidInput, RunFailed
from cpms_admin.faults import failpoint
from cpms_admin.letters.claim import claim_letters, dry_run_counts
from cpms_admin.letters.files import discard, final_dir, make_staging, publish
from cpms_admin.letters.guard import open_guard
from cpms_admin.letters.jobs import Progress, Rendered, RenderJob, render_batch
from cpms_admin.letters.recovery import abandon, recover
from cpms_admin.models import Letter, LetterBatch, Member
from cpms_admin.private_files import describe_entry, fsync_dir, private_dir
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import BatchStatus, Channel, CodeStatus, LetterStatus

POOL_FROM = 4  # chunks: below this, starting worker processes costs more than it saves
SUPERSEDED_WHILE_PRINTING = "its code was superseded by a newer one given while it was printed"


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    limit: int | None = None
    duplex: bool = False
    chunk_size: int = 25
    workers: int | None = None  # None: one per core (at most 4) for large batches


@dataclass(frozen=True)
class BatchHooks:
    """Where a run reports: `log` for lines a cron log keeps, `progress(done, total)`."""

    log: Callable[[str], None] = lambda _line: None
    progress: Progress = lambda _done, _total: None


def dry_run(*, engine: Engine, limit: int | None, clock: Clock) -> dict[str, Any]:
    with Session(engine) as session:
        return dry_run_counts(session, limit=limit, now=clock())


def run_batch(
    *,
    engine: Engine,
    settings: Settings,
    agent: str,
    clock: Clock,
    options: BatchOptions,
    hooks: BatchHooks = BatchHooks(),
) -> dict[str, Any]:
    """Run the nightly batch; the summary `letters batch --json` prints."""
    from cpms_admin.letters.render import check_templates

    check_templates()  # NotReady before anything is claimed
    pepper = load_peppers(settings)
    out = _writable_dir(options.out)  # before anything is claimed
    guard = open_guard(engine, settings.database_url)
    try:
        recovered = recover(
            engine=engine, guard=guard, out=out, agent=agent, clock=clock, log=hooks.log
        )
        summary: dict[str, Any] = {
            "batch_id": None,
            "created_at": None,
            "directory": None,
            "printed": 0,
            "failed": 0,
            "pages": 0,
            "letters": [],
            "files": [],
            "recovered": {
                "abandoned": recovered.abandoned,
                "released": recovered.released,
                "published": recovered.published,
            },
        }
        with Session(engine) as session:
            claim = claim_letters(
                session,
                guard=guard,
                owner=f"{socket.gethostname()}:{os.getpid()}",
                out_dir=str(out),
                limit=options.limit,
                agent=agent,
                now=clock(),
            )
        summary["cancelled"] = sum(claim.cancelled.values())
        summary["cancelled_by_reason"] = dict(claim.cancelled)
        for key, count in sorted(claim.cancelled.items()):
            hooks.log(f"cancelled {count} moot letter(s): {key.replace('_', ' ')}")
        if claim.batch_id is None:
            hooks.log("nothing to print")
            return summary
        failpoint("letters.after_claim")
        hooks.log(f"batch {claim.batch_id}: {claim.claimed} letter(s) claimed")
        summary.update(
            _print(
                engine=engine,
                settings=settings,
                agent=agent,
                clock=clock,
                options=options,
                hooks=hooks,
                out=out,
                pepper=pepper,
                batch_id=claim.batch_id,
                total=claim.claimed,
            )
        )
        return summary
    finally:
        guard.close()


def _print(
    *,
    engine: Engine,
    settings: Settings,
    agent: str,
    clock: Clock,
    options: BatchOptions,
    hooks: BatchHooks,
    out: Path,
    pepper: Peppers,
    batch_id: int,
    total: int,
) -> dict[str, Any]:
    """Render, commit and publish one claimed batch; abandon it if anything fails before
    the commit."""
    staging: Path | None = None
    try:
        staging = make_staging(out, batch_id)
        chunks = -(-total // options.chunk_size)
        workers = options.workers or (min(os.cpu_count() or 1, 4) if chunks >= POOL_FROM else 1)
        job = RenderJob(
            engine=engine,
            batch_id=batch_id,
            staging=staging,
            settings=settings,
            now=clock(),
            total=total,
            duplex=options.duplex,
            chunk_size=options.chunk_size,
            workers=workers,
        )
        rendered = render_batch(job, progress=hooks.progress)
        fsync_dir(staging)  # the files must outlive a power cut once their codes are stored
        failpoint("letters.before_commit")
        now = clock()
        final = final_dir(out, batch_id, now)
        if (taken := describe_entry(final)) is not None:  # now, while nothing is committed
            raise Conflict(
                f"batch {batch_id}: {final} already exists ({taken}); move it away and run "
                "letters batch again"
            )
        manifest = {
            "batch_id": batch_id,
            "created_at": iso(now),
            "letters": rendered.letters,
            "files": rendered.files,
        }
        with Session(engine) as session:
            _commit(
                session,
                batch_id=batch_id,
                rendered=rendered,
                manifest=manifest,
                settings=settings,
                pepper=pepper,
                agent=agent,
                now=now,
                codes_made_at=job.now,
            )
    except BaseException as exc:
        _abandon_own(
            engine,
            batch_id=batch_id,
            staging=staging,
            agent=agent,
            clock=clock,
            error=exc,
            log=hooks.log,
        )
        if isinstance(exc, CpmsError | KeyboardInterrupt):
            raise
        raise RunFailed(
            f"batch {batch_id} failed while rendering ({_describe(exc)}); it was "
            f"abandoned and its letters are back in the queue"
        ) from exc
    assert staging is not None
    failpoint("letters.after_commit")
    hooks.log(
        f"batch {batch_id}: committed, {len(rendered.issued)} letter(s), "
        f"{len(rendered.failed)} failed"
    )
    for letter_id, reason in sorted(rendered.failed.items()):
        hooks.log(f"letter #{letter_id} failed: {reason}")
    publish(staging, manifest, final)  # its errors say the next run will finish it
    hooks.log(f"batch {batch_id}: published {final}")
    return {
        "batch_id": batch_id,
        "created_at": manifest["created_at"],
        "directory": str(final),
        "printed": len(rendered.issued),
        "failed": len(rendered.failed),
        "pages": rendered.pages,
        # As in the manifest (CLI.md's shape): a script may read either.
        "letters": manifest["letters"],
        "files": manifest["files"],
    }


def _commit(
    session: Session,
    *,
    batch_id: int,
    rendered: Rendered,
    manifest: dict[str, Any],
    settings: Settings,
    pepper: Peppers,
    agent: str,
    now: datetime,
    codes_made_at: datetime,
) -> None:
    """The one transaction that makes the printed codes real."""
    with transaction(session):
        completed = session.exec(
            update(LetterBatch)
            .where(col(LetterBatch.id) == batch_id, col(LetterBatch.status) == BatchStatus.running)
            .values(
                status=BatchStatus.completed,
                finished_at=now,
                letter_count=len(rendered.issued),
                manifest=json.dumps(manifest, ensure_ascii=False),
            )
            .returning(col(LetterBatch.id))
        ).first()
        if completed is None:  # our run was taken for dead (lost its lock connection)
            raise Conflict(f"batch {batch_id} was abandoned by another run while printing")
        for letter_id, reason in rendered.failed.items():
            letter = session.get(Letter, letter_id)
            if (
                letter is None or letter.status != LetterStatus.claimed
            ):  # kept under `python -O` too
                raise Conflict(f"batch {batch_id}: letter #{letter_id} is no longer claimed")
            letter.status, letter.status_reason, letter.batch_id = LetterStatus.failed, reason, None
            audit.record(
                session,
                agent=agent,
                action="letter.failed",
                reason=reason,
                at=now,
                member=session.get(Member, letter.member_id),
                letter_id=letter_id,
                batch_id=batch_id,
                outcome="failed",
            )
        session.flush()
        superseded = []
        asked_by = dict(
            session.exec(
                select(Letter.id, Letter.requested_by).where(col(Letter.batch_id) == batch_id)
            ).all()
        )
        for issued in rendered.issued:
            stored = store_code(
                session,
                member_id=issued.member_id,
                purpose=issued.purpose,
                channel=Channel.post,
                code=issued.code,
                pepper=pepper,
                now=now,
                made_at=codes_made_at,  # also what the printed expiry date counts from
                settings=settings,
                letter_id=issued.letter_id,
                requested_by=asked_by.get(issued.letter_id),
            )
            if stored.status == CodeStatus.revoked:
                superseded.append(issued.letter_id)
        if superseded:  # printed all the same: the member holds a newer code, support should know
            session.exec(
                update(Letter)
                .where(col(Letter.id).in_(superseded))
                .values(status_reason=SUPERSEDED_WHILE_PRINTING)
            )
        printed = session.exec(
            update(Letter)
            .where(col(Letter.batch_id) == batch_id, col(Letter.status) == LetterStatus.claimed)
            .values(status=LetterStatus.printed, printed_at=now)
        ).rowcount
        if printed != len(rendered.issued):
            raise Conflict(
                f"batch {batch_id}: {printed} claimed letters, {len(rendered.issued)} "
                "rendered; nothing was committed"
            )
        audit.record(
            session,
            agent=agent,
            action="letters.batch",
            at=now,
            batch_id=batch_id,
            printed=printed,
            failed=len(rendered.failed),
            files=len(rendered.files),
            pages=rendered.pages,
            superseded=superseded,
        )


def _abandon_own(
    engine: Engine,
    *,
    batch_id: int,
    staging: Path | None,
    agent: str,
    clock: Clock,
    error: BaseException,
    log: Callable[[str], None],
) -> None:
    """Best effort: if this fails too, the next run's recovery does it."""
    try:
        with Session(engine) as session:
            released = abandon(
                session,
                batch_id=batch_id,
                agent=agent,
                now=clock(),
                outcome="failed",
                reason=_describe(error),
            )
        if released is not None:
            if staging is not None:
                discard(staging)
            log(f"batch {batch_id}: abandoned, {released} letter(s) back in the queue")
    except Exception as cleanup:  # keep the original error; recovery will finish this
        log(f"batch {batch_id}: could not abandon it now ({_describe(cleanup)}); the next run will")


def _writable_dir(out: Path) -> Path:
    """The real path of --out, created private when missing; refused when it is a link or
    another user could swap it (`private_dir`)."""
    try:
        folder = private_dir(out)
    except InvalidInput as exc:
        raise InvalidInput(f"--out {out}: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"--out {out}: cannot create it ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInput(f"--out {out}: not writable by this user")
    return folder


def _describe(exc: BaseException) -> str:
    """The error in one line, with anything code-like masked (a message could quote text)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return re.sub(
        r"\d{6}", "••••••", f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    )[:300]
