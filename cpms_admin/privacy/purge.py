"""`purge`: drop what the retention rules no longer allow, and say what was dropped.

Purge is the short list CATEGORIES: each has a name, a rule (its retention period, a
setting), what it selects (`survey`: how many, the oldest, what it must leave alone) and
what it does (`drop`, audited: one `purge.<name>` event per category run). `purge --dry-run`
surveys each and changes nothing. A category that fails (a disk error, a directory someone
tampered with, the audit archive) is reported and audited as failed; the others still run,
and the result's exit code is 1. Every category can be killed and run again: see
`retention`, `purge_files`, `purge_batches` and `pseudonymise` for how each finishes the job
the next time.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from cpms_admin.clock import Clock, iso
from cpms_admin.db import PURGE_RUN, checkpoint, one_run, transaction
from cpms_admin.errors import CpmsError, Refused
from cpms_admin.privacy import pseudonymise, purge_batches, purge_files, retention
from cpms_admin.privacy.retention import Found, Rule, Scope, record_category
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import RetentionAction, RetentionCategory


@dataclass(frozen=True)
class Category:
    name: RetentionCategory
    action: RetentionAction
    rule: Rule
    survey: Callable[[Scope, datetime], Found]
    drop: Callable[[Scope, datetime, str], Found]  # (scope, cut-off, the rule in words)


CATEGORIES = (
    Category(
        RetentionCategory.unknown_nir_counters,
        RetentionAction.delete,
        retention.UNKNOWN_NIR_RULE,
        retention.survey_unknown_nirs,
        retention.drop_unknown_nirs,
    ),
    Category(
        RetentionCategory.code_requests,
        RetentionAction.delete,
        retention.CODE_REQUESTS_RULE,
        retention.survey_code_requests,
        retention.drop_code_requests,
    ),
    Category(
        RetentionCategory.mail_files,
        RetentionAction.delete,
        purge_files.MAIL_RULE,
        purge_files.survey_mail_files,
        purge_files.drop_mail_files,
    ),
    Category(
        RetentionCategory.batch_files,
        RetentionAction.delete,
        purge_batches.BATCH_RULE,
        purge_batches.survey_batch_files,
        purge_batches.drop_batch_files,
    ),
    Category(
        RetentionCategory.closed_members,
        RetentionAction.pseudonymise,
        pseudonymise.RULE,
        pseudonymise.survey_closed_members,
        pseudonymise.drop_closed_members,
    ),
    # Last: the archive is of events older than the period, never of this run's.
    Category(
        RetentionCategory.audit_events,
        RetentionAction.archive,
        retention.AUDIT_RULE,
        retention.survey_audit_events,
        retention.drop_audit_events,
    ),
)


@dataclass(frozen=True)
class CategoryResult:
    category: Category
    rule: str  # in words, with its setting
    found: Found
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.category.name,
            "action": self.category.action,
            "rule": self.rule,
            "count": self.found.count,
            "oldest": iso(self.found.oldest),
            "skipped": list(self.found.skipped),
            "error": self.error,
        }


@dataclass(frozen=True)
class PurgeResult:
    dry_run: bool
    at: datetime
    categories: list[CategoryResult]

    @property
    def exit_code(self) -> int:
        return Refused.exit_code if any(result.error for result in self.categories) else 0

    def as_json(self) -> dict[str, Any]:
        """What `purge --json` prints (docs/scripting.md)."""
        return {
            "dry_run": self.dry_run,
            "at": iso(self.at),
            "categories": [result.as_json() for result in self.categories],
        }


def run_purge(
    session: Session, *, settings: Settings, agent: str, clock: Clock, dry_run: bool
) -> PurgeResult:
    """Survey (`dry_run`) or drop every category in turn, each past its own period. One
    purge at a time drops (Conflict): two would archive the audit log twice and race each
    other to the same files."""
    with nullcontext() if dry_run else one_run(session, PURGE_RUN):
        return _run_categories(
            session, settings=settings, agent=agent, now=clock(), dry_run=dry_run
        )


def _run_categories(
    session: Session, *, settings: Settings, agent: str, now: datetime, dry_run: bool
) -> PurgeResult:
    scope = Scope(session=session, settings=settings, agent=agent, now=now)
    results = []
    for category in CATEGORIES:
        rule = category.rule.words(settings)
        before = category.rule.cut_off(settings, now)
        try:
            if dry_run:
                found = category.survey(scope, before)
                session.rollback()
            else:
                found = category.drop(scope, before, rule)
        except (CpmsError, OSError) as exc:
            session.rollback()
            error = _one_line(exc)
            if not dry_run:
                with transaction(session):
                    record_category(
                        scope,
                        category.name,
                        rule=rule,
                        before=before,
                        found=Found(),
                        outcome="failed",
                        error=error,
                    )
            results.append(CategoryResult(category, rule, Found(), error))
            continue
        results.append(CategoryResult(category, rule, found))
    if not dry_run:
        session.rollback()  # no read of this session's holds the checkpoint back
        checkpoint(session.get_bind())  # type: ignore[arg-type]  # an engine, not a connection
    return PurgeResult(dry_run=dry_run, at=now, categories=results)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
