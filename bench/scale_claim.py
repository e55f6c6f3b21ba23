"""Item 3 of issue 18, the batch's part: claiming tonight's queue (N/10 letters: 100,000 at a
million members) in one transaction, as `letters batch` does before it renders anything.

Timed in-process, alternately, median of R runs each (the queue put back between runs):

- claim: `letters.claim.claim_letters` (the run lock held, as a run holds it): the pending
  letters read oldest first (FOR UPDATE SKIP LOCKED on PostgreSQL), the moot ones found and
  cancelled (each audited), the rest claimed for a new batch;
- baseline: a new batch row and a bare `UPDATE letter SET status, batch_id WHERE id IN (...)`
  of the same letters, in the same chunks, in one transaction: the floor of any claim.

The aim: the claim of 100,000 under 5 s. Putting the queue back (the letters pending again,
the runs' batches deleted) is not timed; the cancellations' audit events stay, sealed.
"""

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from scale_build import Built
from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlmodel import Session, SQLModel

from cpms_admin.letters.claim import IN_CHUNK, Claim, claim_letters
from cpms_admin.letters.guard import open_guard

LETTER = SQLModel.metadata.tables["letter"]
BATCH = SQLModel.metadata.tables["letter_batch"]
AIM_S = 5.0


def put_back(engine: Engine, built: Built) -> int:
    """Tonight's queue as it was built; how many letters wait. On PostgreSQL the letters'
    old versions are vacuumed away, so that each run meets the table as the build left it."""
    queue = LETTER.c.id.between(built.pending_first, built.pending_last)
    with engine.begin() as conn:
        conn.execute(
            update(LETTER).where(queue).values(status="pending", batch_id=None, status_reason=None)
        )
        conn.execute(delete(BATCH).where(BATCH.c.id > built.batches))
        waiting = int(conn.execute(select(func.count()).where(queue)).scalar_one())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE letter, letter_batch")
    return waiting


def claim(engine: Engine, built: Built) -> tuple[float, Claim, list[int]]:
    guard = open_guard(engine, built.url)
    try:
        with Session(engine) as session:
            started = time.perf_counter()
            done = claim_letters(
                session,
                guard=guard,
                owner="bench",
                out_dir="/nowhere",  # never written: nothing is rendered
                limit=None,
                agent="bench",
                now=datetime.now(UTC),
            )
            seconds = time.perf_counter() - started
    finally:
        guard.close()
    with engine.connect() as conn:
        taken = conn.execute(select(LETTER.c.id).where(LETTER.c.batch_id == done.batch_id))
        ids = sorted(taken.scalars())
    return seconds, done, ids


def baseline(engine: Engine, ids: Sequence[int]) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        batch_id = conn.execute(
            insert(BATCH).returning(BATCH.c.id),
            {
                "status": "running",
                "owner": "bench",
                "out_dir": "/nowhere",
                "started_at": datetime.now(UTC),
                "letter_count": 0,
            },
        ).scalar_one()
        take = (
            update(LETTER)
            .where(LETTER.c.id.in_(bindparam("ids", expanding=True)))
            .values(status="claimed", batch_id=batch_id)
        )
        for start in range(0, len(ids), IN_CHUNK):
            conn.execute(take, {"ids": list(ids[start : start + IN_CHUNK])})
    return time.perf_counter() - started


def report(built: Built, runs: int) -> list[str]:
    engine = built.open()
    claims, floors = [], []
    try:
        for _ in range(runs):
            waiting = put_back(engine, built)
            seconds, done, ids = claim(engine, built)
            claims.append(seconds)
            put_back(engine, built)
            floors.append(baseline(engine, ids))
        put_back(engine, built)
    finally:
        engine.dispose()
    took, floor = statistics.median(claims), statistics.median(floors)
    cancelled = sum(done.cancelled.values())
    reasons = ", ".join(f"{key} {n}" for key, n in sorted(done.cancelled.items()))
    verdict = "ok" if took < AIM_S else "MISSED"
    return [
        f"{built.engine}: claim of {waiting:,} pending letters ({done.claimed:,} claimed, "
        f"{cancelled:,} moot cancelled: {reasons}), median of {runs}: {took:.2f} s "
        f"({waiting / took:,.0f} letters/s); bare UPDATE of the same {len(ids):,} letters: "
        f"{floor:.2f} s; ratio {took / floor:.1f}x; aim < {AIM_S:.0f} s: {verdict}"
    ]
