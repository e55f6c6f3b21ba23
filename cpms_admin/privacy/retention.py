"""What every purge category shares, and the categories that are plain rows.

A category surveys what is past its retention period (`Found`: how many, the oldest, what it
had to leave alone) and drops it. Dropping is audited by `record_category`: one
`purge.<category>` event per category run, with the rule in words, its cut-off and the
count. Rows go with their event in one transaction, so a killed run drops all or nothing.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, SQLModel, col, select

from cpms_admin.audit import RunAudit
from cpms_admin.audit_chain import archivable, archive_events_into, remove_killed_archives
from cpms_admin.db import sqlite_path, transaction
from cpms_admin.english import agree, count
from cpms_admin.french import agent_time
from cpms_admin.models import AuditEvent, CodeRequest, UnknownLogin
from cpms_admin.portal.code_requests import WINDOW
from cpms_admin.settings import Settings, env_name
from cpms_admin.vocabulary import AuditAction, RetentionCategory


@dataclass(frozen=True)
class Scope:
    """What every category works with: one session, the rules, who runs it, and now."""

    session: Session
    settings: Settings
    agent: str
    now: datetime


@dataclass(frozen=True)
class Rule:
    """A retention period: a setting in days (`text` has `{days}`: `30 days`), or a fixed
    `window`."""

    text: str
    setting: str | None = None
    window: timedelta | None = None

    def period(self, settings: Settings) -> timedelta:
        if self.setting is None:
            assert self.window is not None, "a rule has a setting or a window"
            return self.window
        return timedelta(days=getattr(settings, self.setting))

    def cut_off(self, settings: Settings, now: datetime) -> datetime:
        """Older than this goes."""
        return now - self.period(settings)

    def words(self, settings: Settings) -> str:
        """`older than 365 days (CPMS_RETENTION_AUDIT_DAYS)`, `... 1 day (...)`."""
        if self.setting is None:
            return self.text
        days = count(getattr(settings, self.setting), "day")
        return f"{self.text.format(days=days)} ({env_name(self.setting)})"


@dataclass(frozen=True)
class Found:
    """What a category found past its period (a survey), or dropped (a run)."""

    count: int = 0
    oldest: datetime | None = None
    skipped: tuple[str, ...] = ()  # entries left alone, and why (one line each)


def record_category(
    scope: Scope,
    category: RetentionCategory,
    *,
    rule: str,
    before: datetime,
    found: Found,
    outcome: str = "ok",
    **facts: Any,
) -> RunAudit:
    """The category run's event, added to the caller's transaction; written once, never
    changed afterwards. Returned as a run, to name it in the events of the members it
    changes (`RunAudit.record_members`)."""
    run = RunAudit(
        agent=scope.agent,
        action=AuditAction.purge(category),
        at=scope.now,
        rule=rule,
        before=before,
        count=found.count,
        oldest=found.oldest,
        skipped=list(found.skipped),
        **facts,
    )
    run.start(scope.session, outcome=outcome)
    return run


def count_older(session: Session, column: Any, before: datetime) -> Found:
    """How many rows of `column`'s table have it before `before`, and the oldest."""
    query = select(func.count(), func.min(column)).where(column < before)
    count, oldest = session.exec(query).one()
    return Found(int(count), oldest)


def _delete_older(
    scope: Scope,
    category: RetentionCategory,
    table: type[SQLModel],
    column: Any,
    *,
    before: datetime,
    rule: str,
) -> Found:
    """Every row of `table` whose `column` is older than `before`, deleted with its event."""
    with transaction(scope.session):
        oldest = count_older(scope.session, column, before).oldest
        deleted = scope.session.execute(delete(table).where(column < before)).rowcount  # type: ignore[attr-defined]
        found = Found(int(deleted), oldest if deleted else None)
        record_category(scope, category, rule=rule, before=before, found=found)
    return found


# Unknown NIRs' failure counters (`credentials/unknown_nir.py`): a keyed hash of a NIR someone
# typed, and its counters, kept while they protect against guessing.
UNKNOWN_NIR_RULE = Rule("no failed attempt for {days}", "retention_unknown_nir_days")


def survey_unknown_nirs(scope: Scope, before: datetime) -> Found:
    return count_older(scope.session, col(UnknownLogin.last_attempt_at), before)


def drop_unknown_nirs(scope: Scope, before: datetime, rule: str) -> Found:
    column = col(UnknownLogin.last_attempt_at)
    category = RetentionCategory.unknown_nir_counters
    return _delete_older(scope, category, UnknownLogin, column, before=before, rule=rule)


# The portal's code request log (`portal/code_requests.py`): of no use past the daily window.
CODE_REQUESTS_RULE = Rule(
    "older than 24 hours, the window of the daily limit (CPMS_CODE_REQUESTS_PER_DAY)",
    window=WINDOW,
)


def survey_code_requests(scope: Scope, before: datetime) -> Found:
    return count_older(scope.session, col(CodeRequest.at), before)


def drop_code_requests(scope: Scope, before: datetime, rule: str) -> Found:
    column, category = col(CodeRequest.at), RetentionCategory.code_requests
    return _delete_older(scope, category, CodeRequest, column, before=before, rule=rule)


# Audit events: archived and dropped by the audit chain (`audit_chain.archive_events_into`),
# which alone may delete events: it checks them first, writes them to a new file of the
# archive directory, then re-anchors the chain, in transactions of its own. It archives the
# chain's prefix up to the first event kept, which the count here says too. The category's
# event comes after it, newer than anything it archived.
AUDIT_RULE = Rule("older than {days}", "retention_audit_days")


def survey_audit_events(scope: Scope, before: datetime) -> Found:
    oldest = count_older(scope.session, col(AuditEvent.at), before).oldest
    held = _held_back(scope.session, before=before, now=scope.now)
    count = archivable(scope.session, before=before)
    # None to archive (held back behind a later event): no oldest either, as every category says.
    return Found(count, oldest if count else None, held)


def _held_back(session: Session, *, before: datetime, now: datetime) -> tuple[str, ...]:
    """The chain is cut at one place: an event dated in the future (a clock set wrong when
    it was written) keeps every older event sealed after it until its date is past the
    period, years maybe. Said, not hidden."""
    first_kept = session.exec(
        select(AuditEvent)
        .where(col(AuditEvent.at) >= before, col(AuditEvent.seq).is_not(None))
        .order_by(col(AuditEvent.seq))
        .limit(1)
    ).first()
    if first_kept is None or first_kept.at <= now:
        return ()
    waiting = session.exec(
        select(func.count())
        .select_from(AuditEvent)
        .where(col(AuditEvent.seq) > first_kept.seq, col(AuditEvent.at) < before)
    ).one()
    if not waiting:
        return ()
    return (
        f"audit event #{first_kept.id} is dated {agent_time(first_kept.at)}, in the future: "
        f"the {count(waiting, 'older event')} sealed after it "
        f"{agree(waiting, 'waits', 'wait')} until it is past the period",
    )


def drop_audit_events(scope: Scope, before: datetime, rule: str) -> Found:
    found = survey_audit_events(scope, before)
    scope.session.rollback()  # the archive runs its own transactions
    out = scope.settings.audit_archive
    like = sqlite_path(scope.settings.database_url)
    if not found.count:  # archiving removes them too
        remove_killed_archives(out, like=like)
    else:
        archived = archive_events_into(
            scope.session,
            before=before,
            directory=out,
            agent=scope.agent,
            clock=lambda: scope.now,
            like=like,
        )
        found = Found(archived, found.oldest, found.skipped)
    with transaction(scope.session):
        record_category(
            scope,
            RetentionCategory.audit_events,
            rule=rule,
            before=before,
            found=found,
            archive_dir=str(out),
        )
    return found
