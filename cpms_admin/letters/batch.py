"""`letters batch`, the nightly job: every pending letter printed exactly once, even under SIGKILL.

1. Lock (`guard`), then settle what dead runs left (`recovery`).
2. Claim, one transaction: cancel the moot letters, claim the rest for a new running batch.
3. Render into a private staging directory, each letter's code made as it is rendered.
4. Commit, one transaction: store the code hashes, letters printed, batch completed with its
   manifest, audit. The codes work from this instant (they count from when they were made, so
   a code the member was given meanwhile wins), and the duty to publish begins.
5. Publish (`files.publish`): manifest first, then the PDF names, then the directory.

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock, iso
from cpms_admin.credentials.printed import Printed, store_printed_codes
from cpms_admin.db import transaction
from cpms_admin.english import count
from cpms_admin.errors import Conflict, CpmsError, InvalidInput, RunFailed
from cpms_admin.faults import failpoint
from cpms_admin.letters.claim import (
    DryRun,
    claim_letters,
    dry_run_counts,
    lost_since_claim,
)
from cpms_admin.letters.files import discard, final_dir, make_staging, publish, run_mark
from cpms_admin.letters.guard import open_guard
from cpms_admin.letters.jobs import Progress, Rendered, RenderJob, render_batch
from cpms_admin.letters.pdf import zones
from cpms_admin.letters.recovery import Recovered, abandon, mark_published, recover
from cpms_admin.letters.voiding import (
    LOST_WHILE_PRINTING,
    SUPERSEDED_PULL,
    SUPERSEDED_WHILE_PRINTING,
    queue_again,
    record_void,
)
from cpms_admin.members.postal import lines_digest
from cpms_admin.models import Letter, LetterBatch, Member
from cpms_admin.pepper import Peppers, load_peppers
from cpms_admin.private_files import (
    absolute,
    check_writable,
    describe_entry,
    fsync_dir,
    private_dir,
)
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AuditAction, BatchStatus, CancelReason, LetterStatus

POOL_FROM = 4  # chunks: below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    limit: int | None = None
    duplex: bool = False
    chunk_size: int = 25
    workers: int | None = None  # None: one per core (at most 4) for large batches


@dataclass(frozen=True)
class BatchHooks:
    """Where a run reports: `log` for what its summary (`BatchSummary`) does not say (dead
    runs settled, letters that failed and why, a batch abandoned), `progress(done, total)`
    from the claim (0 done) to the last letter rendered."""

    log: Callable[[str], None] = lambda _line: None
    progress: Progress = lambda _done, _total: None


def dry_run(*, engine: Engine, out: Path, limit: int | None, clock: Clock) -> DryRun:
    """What a run would print and cancel; `out` is checked as the run would check it, and
    not made."""
    _check_out_parent(out)
    if describe_entry(absolute(out)) is not None:
        _writable_dir(out)  # there already: checked, nothing made
    else:
        try:  # the folders it would be made in, as the run checks them
            check_writable(out)
        except InvalidInput as exc:
            raise InvalidInput(f"--out {out}: {exc}") from None
    with Session(engine) as session:
        return dry_run_counts(session, limit=limit, now=clock())


@dataclass
class BatchSummary:
    """What a run did: the summary `letters batch --json` prints (docs/scripting.md)."""

    recovered: Recovered
    cancelled_by_reason: dict[str, int] = field(default_factory=dict)
    batch_id: int | None = None
    created_at: str | None = None
    directory: str | None = None
    printed: int = 0
    failed: int = 0
    pages: int = 0
    letters: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    pull: list[dict[str, Any]] = field(default_factory=list)  # as in the manifest
    # What the print house's order form asks (`_order_form`); None while nothing was printed.
    order: dict[str, Any] = field(
        default_factory=lambda: dict.fromkeys(
            ("sender_reference", "return_address", "page_size", "duplex")
        )
    )

    @property
    def cancelled(self) -> int:
        return sum(self.cancelled_by_reason.values())

    @property
    def idle(self) -> bool:
        """Whether the run changed nothing: no batch, no letter cancelled, no dead run
        settled."""
        recovered = self.recovered
        return (
            self.batch_id is None
            and not self.cancelled
            and not (recovered.abandoned or recovered.released or recovered.published)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "directory": self.directory,
            "printed": self.printed,
            "failed": self.failed,
            "pages": self.pages,
            **self.order,
            # As in the manifest (docs/scripting.md): a script may read either.
            "letters": self.letters,
            "files": self.files,
            "pull": self.pull,
            "recovered": {
                "abandoned": self.recovered.abandoned,
                "released": self.recovered.released,
                "published": self.recovered.published,
            },
            "cancelled": self.cancelled,
            "cancelled_by_reason": self.cancelled_by_reason,
        }


@dataclass(frozen=True)
class _Run:
    """What every step of one run needs."""

    engine: Engine
    settings: Settings
    agent: str
    clock: Clock
    options: BatchOptions
    hooks: BatchHooks
    out: Path
    pepper: Peppers
    return_address: tuple[str, ...]  # checked against its window once, before the claim


def run_batch(
    *,
    engine: Engine,
    settings: Settings,
    agent: str,
    clock: Clock,
    options: BatchOptions,
    hooks: BatchHooks = BatchHooks(),
) -> BatchSummary:
    """Run the nightly batch (steps 1 to 5 of the module docstring)."""
    from cpms_admin.letters.pdf.render import check_templates

    check_templates()  # NotReady before anything is claimed or made
    return_address = zones.letterhead(settings)
    pepper = load_peppers(settings)
    guard = open_guard(engine, settings.database_url)
    try:
        run = _Run(
            engine=engine,
            settings=settings,
            agent=agent,
            clock=clock,
            options=options,
            hooks=hooks,
            # Made only once everything else is in place, the lock included: a run refused
            # because another holds it leaves nothing behind.
            out=_writable_dir(options.out),
            pepper=pepper,
            return_address=return_address,
        )
        summary = BatchSummary(
            recover(
                engine=engine, guard=guard, out=run.out, agent=agent, clock=clock, log=hooks.log
            )
        )
        with Session(engine) as session:
            claim = claim_letters(
                session,
                guard=guard,
                owner=f"{socket.gethostname()}:{os.getpid()}",
                out_dir=str(run.out),
                limit=options.limit,
                agent=agent,
                now=clock(),
            )
        summary.cancelled_by_reason = dict(claim.cancelled)
        if claim.batch_id is None:
            return summary
        _print(run, summary, batch_id=claim.batch_id, total=claim.claimed)
        return summary
    finally:
        guard.close()


def _print(run: _Run, summary: BatchSummary, *, batch_id: int, total: int) -> None:
    """Render, commit and publish one claimed batch, into `summary`; abandon it if anything
    fails before the commit."""
    staging: Path | None = None
    mark: str | None = None
    try:  # from the claim's commit on: a stop (SIGTERM, Ctrl-C) gives the letters back
        failpoint("letters.after_claim")
        mark = _mark(run, batch_id)
        staging = make_staging(run.out, batch_id, mark)
        job, rendered = _render(run, batch_id=batch_id, total=total, staging=staging)
        now = run.clock()
        final = final_dir(run.out, batch_id, now)
        if (taken := describe_entry(final)) is not None:  # now, while nothing is committed
            raise Conflict(
                f"batch {batch_id}: {final} already exists ({taken}); move it away and run "
                "letters batch again"
            )
        manifest = {
            "batch_id": batch_id,
            "created_at": iso(now),
            **_order_form(run, rendered),
            "letters": rendered.letters,
            "files": rendered.files,
        }
        with Session(run.engine) as session:
            _commit(
                session,
                run,
                batch_id=batch_id,
                rendered=rendered,
                manifest=manifest,
                now=now,
                codes_made_at=job.now,
            )
    except BaseException as exc:
        settled = _abandon_own(run, batch_id=batch_id, staging=staging, mark=mark, error=exc)
        if isinstance(exc, CpmsError | KeyboardInterrupt):
            run.hooks.log(f"batch {batch_id}: {settled}")
            raise
        raise RunFailed(
            f"batch {batch_id} failed while rendering ({_describe(exc)}); {settled}"
        ) from exc
    issued, failed = len(rendered.issued), len(rendered.failed)
    published = False
    try:
        failpoint("letters.after_commit")
        for letter_id, reason in sorted(rendered.failed.items()):
            run.hooks.log(f"letter #{letter_id} failed: {reason}")
        publish(staging, manifest, final)  # its errors say the next run will finish it
        published = True
        failpoint("letters.after_publish")
        _record_published(run, batch_id=batch_id, final=final)
    except KeyboardInterrupt:  # the letters are printed already: say where, not only "stopped"
        where = f"published in {final}" if published else f"its files wait in {staging}"
        run.hooks.log(
            f"batch {batch_id}: {count(issued, 'letter')} committed as printed, then stopped: "
            f"{where}; the next run {'records' if published else 'publishes'} it"
        )
        raise
    summary.batch_id, summary.created_at, summary.directory = batch_id, iso(now), str(final)
    summary.printed, summary.failed, summary.pages = issued, failed, rendered.pages
    summary.letters, summary.files, summary.pull = (
        rendered.letters,
        rendered.files,
        manifest["pull"],
    )
    summary.order = _order_form(run, rendered)


def _record_published(run: _Run, *, batch_id: int, final: Path) -> None:
    """Record that the batch is published. Its letters are printed and its files where the
    print house takes them: a failure here (the database locked or full) is bookkeeping the
    next run's recovery finishes when it finds `final`, said as such, not a failed night."""
    try:
        with Session(run.engine) as session:
            mark_published(session, batch_id=batch_id, now=run.clock())
    except (DBAPIError, OSError) as exc:
        run.hooks.log(
            f"batch {batch_id}: published in {final}; recording it failed ({_describe(exc)}): "
            "the next run records it"
        )


def _order_form(run: _Run, rendered: Rendered) -> dict[str, Any]:
    """What a print house's order form asks of a batch, beside its files."""
    return {
        "sender_reference": run.settings.letter_sender_reference,
        # For a print house printing it on the back flap rather than through a window.
        "return_address": list(run.return_address),
        "page_size": " + ".join(sorted(rendered.page_sizes)) or None,
        "duplex": run.options.duplex,
    }


def _render(run: _Run, *, batch_id: int, total: int, staging: Path) -> tuple[RenderJob, Rendered]:
    """Every claimed letter into PDF files in `staging`, each with its new code, synced."""
    chunks = -(-total // run.options.chunk_size)
    workers = run.options.workers or (min(os.cpu_count() or 1, 4) if chunks >= POOL_FROM else 1)
    job = RenderJob(
        engine=run.engine,
        batch_id=batch_id,
        staging=staging,
        settings=run.settings,
        return_address=run.return_address,
        now=run.clock(),
        total=total,
        duplex=run.options.duplex,
        chunk_size=run.options.chunk_size,
        workers=workers,
    )
    rendered = render_batch(job, progress=run.hooks.progress)
    fsync_dir(staging)  # the files must outlive a power cut once their codes are stored
    failpoint("letters.before_commit")
    return job, rendered


def _commit(
    session: Session,
    run: _Run,
    *,
    batch_id: int,
    rendered: Rendered,
    manifest: dict[str, Any],
    now: datetime,
    codes_made_at: datetime,
) -> None:
    """The one transaction that makes the printed codes real. A letter whose member was
    closed, whose address was flagged undeliverable, or whose address changed while it was
    printed, or whose code a newer one given meanwhile superseded, is printed all the same
    (it is in the files) with its code stored revoked, and logged for the print house to
    pull; one that bears the address before a change is queued again, for the next batch to
    print to the new one."""
    with transaction(session):
        # First: the members stay as read until the commit (see lost_since_claim).
        why, moved = _lost_while_printing(session, batch_id=batch_id, rendered=rendered)
        failpoint("letters.members_held")
        _complete(session, batch_id=batch_id, rendered=rendered, now=now)
        _mark_failed(session, run, batch_id=batch_id, failed=rendered.failed, now=now)
        superseded = _store_codes(
            session,
            run,
            batch_id=batch_id,
            rendered=rendered,
            now=now,
            made_at=codes_made_at,
            lost=why,
        )
        # The print house's list of letters to take out of the run (in the files, but their
        # codes will not work): in the manifest the batch keeps and publishes.
        pull = {**why, **dict.fromkeys(superseded, SUPERSEDED_PULL)}
        manifest["pull"] = [
            {"letter_id": letter_id, "reason": reason} for letter_id, reason in sorted(pull.items())
        ]
        session.exec(
            update(LetterBatch)
            .where(col(LetterBatch.id) == batch_id)
            .values(manifest=json.dumps(manifest, ensure_ascii=False))
        )
        _mark_printed(session, batch_id=batch_id, rendered=rendered, now=now)
        _keep_address_digests(session, run, rendered)
        queued_again = queue_again(session, moved, now=now) if moved else {}
        _audit_batch(
            session,
            run,
            batch_id=batch_id,
            rendered=rendered,
            superseded=superseded,
            lost=why,
            queued_again=queued_again,
            now=now,
        )
    _log_lost(run, pull, queued_again)


def _audit_batch(
    session: Session,
    run: _Run,
    *,
    batch_id: int,
    rendered: Rendered,
    superseded: list[int],
    lost: dict[int, str],
    queued_again: dict[int, int],
    now: datetime,
) -> None:
    """The batch's event, and each voided letter's on its member."""
    audit.record(
        session,
        agent=run.agent,
        action=AuditAction.letters_batch,
        at=now,
        batch_id=batch_id,
        printed=len(rendered.issued),
        failed=len(rendered.failed),
        files=len(rendered.files),
        pages=rendered.pages,
        superseded=superseded,
        voided=sorted(lost),
        queued_again=queued_again,
    )
    for letter_id, reason in lost.items():
        record_void(
            session,
            session.get_one(Letter, letter_id),
            why=reason,
            again=queued_again,
            agent=run.agent,
            now=now,
        )


def _log_lost(run: _Run, why: dict[int, str], queued_again: dict[int, int]) -> None:
    """Each letter printed in vain, for whoever reads the run's log."""
    for letter_id, reason in why.items():
        lost_line = f"letter #{letter_id}: {reason}"
        if letter_id in queued_again:
            lost_line += f"; queued again as letter #{queued_again[letter_id]}"
        run.hooks.log(lost_line)


def _lost_while_printing(
    session: Session, *, batch_id: int, rendered: Rendered
) -> tuple[dict[int, str], list[int]]:
    """The printed letters that must not count (see `lost_since_claim`; a letter that failed
    is in no file), each with the reason the print house reads, and those of them to queue
    again because they bear the address before a change."""
    lost = {
        letter_id: key
        for letter_id, key in lost_since_claim(
            session,
            batch_id=batch_id,
            printed_to={i.letter_id: i.delivery_lines for i in rendered.issued},
        ).items()
        if letter_id not in rendered.failed
    }
    why = {
        letter_id: LOST_WHILE_PRINTING.format(key.text) for letter_id, key in sorted(lost.items())
    }
    return why, sorted(
        letter_id for letter_id, key in lost.items() if key == CancelReason.address_changed
    )


def _complete(session: Session, *, batch_id: int, rendered: Rendered, now: datetime) -> None:
    """The batch completed, unless another run took ours for dead (it lost its lock's
    connection) and abandoned it meanwhile."""
    completed = session.exec(
        update(LetterBatch)
        .where(col(LetterBatch.id) == batch_id, col(LetterBatch.status) == BatchStatus.running)
        .values(
            status=BatchStatus.completed,
            finished_at=now,
            letter_count=len(rendered.issued),
        )
        .returning(col(LetterBatch.id))
    ).first()
    if completed is None:
        raise Conflict(f"batch {batch_id} was abandoned by another run while printing")


def _mark_printed(session: Session, *, batch_id: int, rendered: Rendered, now: datetime) -> None:
    """The claimed letters printed: every one of them, or the transaction is refused."""
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


def _keep_address_digests(session: Session, run: _Run, rendered: Rendered) -> None:
    """Each printed letter keeps a keyed digest of the address lines it bore, for the day it
    comes back (letters/returns.py)."""
    digests = [
        {"letter_key": i.letter_id, "address_digest": lines_digest(run.pepper, i.delivery_lines)}
        for i in rendered.issued
    ]
    if digests:
        letters = SQLModel.metadata.tables["letter"]  # Core: one UPDATE run for every row
        session.execute(update(letters).where(letters.c.id == bindparam("letter_key")), digests)


def _mark_failed(
    session: Session, run: _Run, *, batch_id: int, failed: dict[int, str], now: datetime
) -> None:
    """The letters that could not be laid out: failed, with their reason, audited."""
    for letter_id, reason in failed.items():
        letter = session.get(Letter, letter_id)
        if letter is None or letter.status != LetterStatus.claimed:  # kept under `python -O`
            raise Conflict(f"batch {batch_id}: letter #{letter_id} is no longer claimed")
        letter.status, letter.status_reason, letter.batch_id = LetterStatus.failed, reason, None
        audit.record(
            session,
            agent=run.agent,
            action=AuditAction.letter_failed,
            reason=reason,
            at=now,
            member=session.get(Member, letter.member_id),
            letter_id=letter_id,
            batch_id=batch_id,
            outcome="failed",
        )
    session.flush()


def _store_codes(
    session: Session,
    run: _Run,
    *,
    batch_id: int,
    rendered: Rendered,
    now: datetime,
    made_at: datetime,
    lost: dict[int, str],
) -> list[int]:
    """Store the printed codes' hashes, those of the `lost` letters (id -> why) revoked; the
    letters whose code a newer one superseded. Each such letter says why its code will not
    work (printed all the same: support should know)."""
    asked_by = dict(
        session.exec(
            select(Letter.id, Letter.requested_by).where(col(Letter.batch_id) == batch_id)
        ).all()
    )
    printed = [
        Printed(i.letter_id, i.member_id, i.purpose, i.code, asked_by.get(i.letter_id))
        for i in rendered.issued
    ]
    newer = store_printed_codes(
        session,
        printed,
        pepper=run.pepper,
        now=now,
        made_at=made_at,  # also what the printed expiry date counts from
        settings=run.settings,
        void=lost,
    )
    reasons: dict[str, list[int]] = {SUPERSEDED_WHILE_PRINTING: newer}
    for letter_id, reason in lost.items():
        reasons.setdefault(reason, []).append(letter_id)
    for reason, letter_ids in reasons.items():
        if letter_ids:
            session.exec(
                update(Letter).where(col(Letter.id).in_(letter_ids)).values(status_reason=reason)
            )
    return newer


def _mark(run: _Run, batch_id: int) -> str:
    """This run's mark on its batch's staging directory, as recovery reads it from the row."""
    with Session(run.engine) as session:
        batch = session.get(LetterBatch, batch_id)
        assert batch is not None  # claimed by this run
        return run_mark(batch_id, batch.owner, batch.started_at)


def _abandon_own(
    run: _Run, *, batch_id: int, staging: Path | None, mark: str | None, error: BaseException
) -> str:
    """Best effort: if this fails too, the next run's recovery does it. Says what it did, for
    the one line the run's failure prints."""
    try:
        with Session(run.engine) as session:
            released = abandon(
                session,
                batch_id=batch_id,
                agent=run.agent,
                now=run.clock(),
                outcome="failed",
                reason=_describe(error),
            )
        if released is None:
            return "another run settled it first"
        if staging is not None and mark is not None:  # the run made its staging directory
            discard(staging, mark)
        return f"it was abandoned and {count(released, 'letter')} went back in the queue"
    except Exception as cleanup:  # keep the original error; recovery will finish this
        return f"it could not be abandoned now ({_describe(cleanup)}); the next run will"


def _check_out_parent(out: Path) -> None:
    parent = absolute(out).parent  # `..` not collapsed: `typo/../print` needs `typo`
    try:
        is_folder = parent.is_dir()
    except OSError as exc:
        raise InvalidInput(f"--out {out}: cannot look into {parent} ({exc.strerror})") from None
    if not is_folder:
        entry = describe_entry(parent)
        what = "does not exist" if entry is None else f"is {entry}, not a folder"
        raise InvalidInput(
            f"--out {out}: {parent} {what}: check the path (only the last folder is made)"
        )


def _writable_dir(out: Path) -> Path:
    """The real path of --out, created private when missing (not its parents: a mistyped
    path must not take the letters and their codes where nobody collects them); refused
    when it is a link or another user could swap it (`private_dir`)."""
    _check_out_parent(out)
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
