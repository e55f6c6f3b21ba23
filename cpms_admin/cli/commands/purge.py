"""`cpms-admin purge`: drop what the retention rules no longer allow."""

from typing import Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object, error, exit_as, warn, when
from cpms_admin.english import noun

# What each category's items are called, and the verbs of its action, for the agent.
_ITEMS = {
    "unknown_nir_counters": ("unknown-NIR counter", None),
    "code_requests": ("code request", None),
    "mail_files": ("e-mail file", None),
    "batch_files": ("letters batch", "letters batches"),
    "closed_members": ("closed member", None),
    "audit_events": ("audit event", None),
}
_DONE = {"delete": "Deleted", "pseudonymise": "Pseudonymised", "archive": "Archived"}


def purge(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go, per category; change nothing.")
    ] = False,
) -> None:
    """Drop what the retention rules no longer allow, and say what was dropped.

    Each category has its own period (README, "Retention"): unknown-NIR counters, the code
    request log, e-mail files in CPMS_MAIL_DIR, printed letters batches (their files
    and stored manifest), closed members' personal data (pseudonymised: the row stays for
    the audit trail) and audit events (archived, then dropped). Every category run is
    audited (`purge.<category>`), and every pseudonymised member too. Prints nothing when
    nothing was dropped (for cron); exits 1 if a category failed, after doing the others,
    and 4 if another purge is running. Run it again after an interruption: it finishes the
    job.

    Example: cpms-admin purge --dry-run
    """
    from cpms_admin.privacy.purge import run_purge

    app_ = app_context(ctx)
    with app_.session(read_only=dry_run) as session:
        result = run_purge(
            session,
            settings=app_.settings,
            agent=app_.agent,
            clock=app_.clock,
            dry_run=dry_run,
        )
    lines = ["Dry run, nothing was changed. Past their retention period:"] if dry_run else []
    for category in result.categories:
        name = category.category.name
        for skipped in category.found.skipped:
            warn(f"purge {name}: {skipped}")
        if category.error:
            error(f"purge {name} failed: {category.error}")
            continue
        count = category.found.count
        if not count and not dry_run:
            continue
        action = category.category.action
        verb = f"  {count:,} to {action}" if dry_run else f"{_DONE[action]} {count:,}"
        oldest = f", the oldest {when(category.found.oldest)}" if category.found.oldest else ""
        what = noun(count, *_ITEMS[name])
        lines.append(f"{verb} {what}{oldest}: {category.rule}.")
    emit_object(app_, result.as_json(), lines)
    exit_as(result)
