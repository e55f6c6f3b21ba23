"""What every letters batch run does first: finish or undo the runs that died.

A dead run's batch is either still "running" (it died before its commit: its codes were never
stored, so its files are worthless) or "completed" with its staging directory still there (it
died after the commit, while publishing: its codes are live, so its files must be published,
never redone). The first is abandoned and its letters go back to the queue; the second is
published from the manifest stored with the batch. Only batches that no live run owns are
touched (see `guard`). When the second cannot be published yet (a name taken, a full
disk), the run stops with that one error and the batch waits, committed, for the next run.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock
from cpms_admin.db import transaction
from cpms_admin.english import count
from cpms_admin.letters.files import (
    check_files,
    discard,
    final_dir,
    leftovers,
    publish,
    staging_dir,
)
from cpms_admin.letters.guard import RunGuard
from cpms_admin.models import Letter, LetterBatch
from cpms_admin.private_files import describe_entry
from cpms_admin.vocabulary import BatchStatus, LetterStatus

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
            action="letters.batch_abandoned",
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
        ids = set(
            session.exec(select(LetterBatch.id).where(LetterBatch.status == BatchStatus.running))
        )
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
        staging = staging_dir(Path(batch.out_dir), batch_id)
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
        discard(staging)
    # Only a directory: a link or a file at that name is not what the run left (`publish`
    # refuses a directory of another user, loudly: its batch is committed).
    elif status == BatchStatus.completed and describe_entry(staging) == "a directory" and manifest:
        document = json.loads(manifest)
        check_files(staging, document)
        created = datetime.fromisoformat(document["created_at"])
        final = publish(staging, document, final_dir(staging.parent, batch_id, created))
        result.published.append(str(final))
        log(f"batch {batch_id}: committed by a run that died while publishing; published {final}")
