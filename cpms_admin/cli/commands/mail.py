"""`cpms-admin mail`: the queue of outgoing e-mails (campaign codes)."""

from typing import Annotated

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import BulkProgress, emit_object
from cpms_admin.english import count
from cpms_admin.settings import LIMIT_MAX

app = typer.Typer(help="Send the queued e-mails.", no_args_is_help=True)


@app.command()
def send(
    ctx: typer.Context,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=LIMIT_MAX, help="Send at most N e-mails this run."),
    ] = None,
) -> None:
    """Send the queued e-mails (code campaigns), each with a code made at send time.

    Failures are retried by the next run (5 attempts at most, then given up: exit 1); after
    5 failures in a row the run stops and exits 1, leaving the rest queued. An e-mail whose
    member left, lost their address or already has a code on its way is cancelled.
    Meant for cron, every few minutes: a run with nothing to do prints nothing (unless
    --json); otherwise one summary line, with a progress bar on a terminal.

    Example: cpms-admin mail send --limit 500
    """
    from cpms_admin.mail.queue import check_sent, send_queued_mail

    app_ = app_context(ctx)
    with BulkProgress("Sending e-mails") as progress, app_.session() as session:
        run = send_queued_mail(
            session,
            settings=app_.settings,
            agent=app_.agent,
            limit=limit,
            clock=app_.clock,
            on_progress=lambda c: progress.update(c.sent + c.retry + c.failed + c.cancelled),
            on_total=lambda total: progress.update(0, total=total),
        )
    counts = run.counts
    idle = not (counts.sent or counts.retry or counts.failed or counts.cancelled or run.stopped)
    # Run every few minutes by cron, which mails any output: an empty queue says nothing
    # (--json still prints its document).
    if app_.json_output or not idle:
        emit_object(
            app_,
            run.as_json(),
            [
                f"Sent {count(counts.sent, 'e-mail')}; {counts.retry:,} to retry, "
                f"{counts.failed:,} given up, {counts.cancelled:,} no longer needed; "
                f"{counts.left:,} still queued."
            ],
        )
    check_sent(run)
