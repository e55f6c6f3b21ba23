"""What every letters batch run does first: finish or undo the runs that died.

A dead run's batch is either still "running" (it died before its commit: its codes were never
stored, so its files are worthless) or "completed" but not published (it died after the
commit, while publishing: its codes are live, so its files must be published, never redone).
The first is abandoned and its letters go back to the queue; the second is published from
its staging directory and the manifest stored with the batch. Only batches that no live run
owns are touched (see `guard`). When the second cannot be published yet (a name taken, a full
disk), the run stops with that one error and the batch waits, committed, for the next run.
A committed batch whose staging directory is gone (deleted by hand) and was never published
is lost: its letters go back to the queue, their codes revoked, and the run says so.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, and_, or_, update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock
from cpms_admin.credentials.codes import revoke_printed
from cpms_admin.db import transaction
from cpms_admin.english import count
from cpms_admin.letters.files import (
    check_files,
    discard,
    leftovers,
    publish,
    published_dir,
    run_mark,
    staging_dir,
)
from cpms_admin.letters.guard import RunGuard
from cpms_admin.models import Letter, LetterBatch, pk
from cpms_admin.private_files import describe_entry
from cpms_admin.vocabulary import AuditAction, BatchStatus, LetterStatus, RevokeReason

# A released letter's status_reason (privacy/dossier_pdf.py words it).
FILES_LOST = "batch {}'s files were lost before they were published"

Log = Callable[[str], None]


@dataclass
class Recovered:
    abandoned: list[int] = field(default_factory=list)  # batch ids
    released: int = 0  # letters put back in the queue
    published: list[str] = field(default_factory=list)  # directories finished for dead runs


def abandon(
    session: Session, *, batch_id: int, agent: str, now: datetime, outcome: str, reason: str
) -> int | None:
    """Abandon a running batch and put its letters back in the queue, in one transaction.

    Returns how many letters were released, or None when the batch was no longer running
    (someone else settled it first). Its directory is the caller's to discard, afterwards.
    """
    with transaction(session):
        settled = session.exec(
            update(LetterBatch)
            .where(col(LetterBatch.id) == batch_id, col(LetterBatch.status) == BatchStatus.running)
            .values(status=BatchStatus.abandoned, finished_at=now)
            .returning(col(LetterBatch.id))
        ).first()
        if settled is None:
            return None
        released = session.exec(
            update(Letter)
            .where(col(Letter.batch_id) == batch_id, col(Letter.status) == LetterStatus.claimed)
            .values(status=LetterStatus.pending, batch_id=None)
        ).rowcount
        audit.record(
            session,
            agent=agent,
            action=AuditAction.letters_batch_abandoned,
            reason=reason,
            outcome=outcome,
            at=now,
            batch_id=batch_id,
            released=released,
        )
    return int(released)


def recover(
    *, engine: Engine, guard: RunGuard, out: Path, agent: str, clock: Clock, log: Log
) -> Recovered:
    """Settle every batch left behind by a dead run (this database, any output directory)."""
    with Session(engine) as session:
        unfinished = or_(
            col(LetterBatch.status) == BatchStatus.running,
            and_(
                col(LetterBatch.status) == BatchStatus.completed,
                col(LetterBatch.published_at).is_(None),
            ),
        )
        ids = set(session.exec(select(LetterBatch.id).where(unfinished)))
        out_dirs = set(session.exec(select(LetterBatch.out_dir).distinct()))
    for directory in {out, *map(Path, out_dirs)}:
        ids |= leftovers(directory)
    result = Recovered()
    for batch_id in sorted(i for i in ids if i is not None):
        with guard.take_over(batch_id) as free:
            if free:
                _recover_one(
                    engine, batch_id=batch_id, agent=agent, clock=clock, log=log, result=result
                )
    return result


def _recover_one(
    engine: Engine, *, batch_id: int, agent: str, clock: Clock, log: Log, result: Recovered
) -> None:
    with Session(engine) as session:
        batch = session.get(LetterBatch, batch_id)
        if batch is None:  # a directory from another database: not ours to judge
            return
        status, owner, manifest = batch.status, batch.owner, batch.manifest
        started_at = batch.started_at
        staging = staging_dir(Path(batch.out_dir), batch_id)
        unpublished = status == BatchStatus.completed and batch.published_at is None
        if unpublished and manifest and describe_entry(staging) != "a directory":
            _settle_unpublished(session, batch, agent=agent, now=clock(), log=log, result=result)
            return
        if status == BatchStatus.running:
            released = abandon(
                session,
                batch_id=batch_id,
                agent=agent,
                now=clock(),
                outcome="abandoned",
                reason=f"its run ({owner}) died",
            )
            if released is not None:
                status = BatchStatus.abandoned
                result.abandoned.append(batch_id)
                result.released += released
                log(
                    f"batch {batch_id}: its run ({owner}) died before finishing; abandoned, "
                    f"{count(released, 'letter')} back in the queue"
                )
    if status == BatchStatus.abandoned:
        if not discard(staging, run_mark(batch_id, owner, started_at)):
            log(
                f"batch {batch_id}: {staging} was not made by its run (another database's "
                "batch, or a folder made by hand); left alone"
            )
    # Only a directory: a link or a file at that name is not what the run left (`publish`
    # refuses a directory of another user, loudly: its batch is committed).
    elif status == BatchStatus.completed and describe_entry(staging) == "a directory" and manifest:
        document = json.loads(manifest)
        check_files(staging, document)
        final = publish(staging, document, published_dir(staging.parent, document))
        with Session(engine) as session:
            mark_published(session, batch_id=batch_id, now=clock())
        result.published.append(str(final))
        log(f"batch {batch_id}: committed by a run that died while publishing; published {final}")


def mark_published(session: Session, *, batch_id: int, now: datetime) -> None:
    """The batch's directory has its final name: recovery has nothing left to do for it."""
    with transaction(session):
        session.exec(
            update(LetterBatch).where(col(LetterBatch.id) == batch_id).values(published_at=now)
        )


def _settle_unpublished(
    session: Session, batch: LetterBatch, *, agent: str, now: datetime, log: Log, result: Recovered
) -> None:
    """A committed batch not published, whose staging directory is gone: published after
    all when its final directory is there (its run died before saying so), else lost."""
    batch_id, out = pk(batch), Path(batch.out_dir)
    if describe_entry(published_dir(out, json.loads(batch.manifest or "{}"))) == "a directory":
        mark_published(session, batch_id=batch_id, now=now)
        return
    released = _lose(session, batch_id=batch_id, agent=agent, now=now)
    if released is None:  # settled by someone else first
        return
    result.abandoned.append(batch_id)
    result.released += released
    log(
        f"batch {batch_id}: committed, but {staging_dir(out, batch_id)} was gone before it was "
        f"published: its files are lost; {count(released, 'letter')} back in the queue, their "
        "codes revoked"
    )


def _lose(session: Session, *, batch_id: int, agent: str, now: datetime) -> int | None:
    """The letters of a committed batch whose files are lost back in the queue, their codes
    (in no letter anyone can receive) revoked; the batch abandoned. In one transaction."""
    with transaction(session):
        settled = session.exec(
            update(LetterBatch)
            .where(
                col(LetterBatch.id) == batch_id,
                col(LetterBatch.status) == BatchStatus.completed,
                col(LetterBatch.published_at).is_(None),
            )
            .values(status=BatchStatus.abandoned)
            .returning(col(LetterBatch.id))
        ).first()
        if settled is None:
            return None
        revoke_printed(
            session,
            select(Letter.id).where(
                col(Letter.batch_id) == batch_id, col(Letter.status) == LetterStatus.printed
            ),
            reason=RevokeReason.batch_lost,
        )
        released = session.exec(
            update(Letter)
            .where(col(Letter.batch_id) == batch_id, col(Letter.status) == LetterStatus.printed)
            .values(
                status=LetterStatus.pending,
                batch_id=None,
                printed_at=None,
                status_reason=FILES_LOST.format(batch_id),
            )
        ).rowcount
        audit.record(
            session,
            agent=agent,
            action=AuditAction.letters_batch_abandoned,
            reason="its files were lost before they were published",
            outcome="lost",
            at=now,
            batch_id=batch_id,
            released=released,
        )
    return int(released)
