"""`cpms-admin pepper`: rotate the pepper, and see what each old one still keys."""

import typer

from cpms_admin.cli.context import app_context
from cpms_admin.cli.output import emit_object, emit_rows, warn

app = typer.Typer(
    help="Rotate the server-side pepper without locking anyone out.", no_args_is_help=True
)


@app.command()
def rotate(ctx: typer.Context) -> None:
    """Make a new pepper current: new hashes use it, old ones keep working.

    The new pepper is added to the pepper file (its other lines stay: old PIN hashes are
    re-hashed at each member's next login, live codes work until they expire). Back the file
    up afterwards. Run it again if it was interrupted. See `pepper status` for when an old
    pepper's line can be deleted.

    Example: cpms-admin pepper rotate
    """
    from cpms_admin.operations import peppers

    app_ = app_context(ctx)
    with app_.session() as session:
        done = peppers.rotate(session, settings=app_.settings, agent=app_.agent, clock=app_.clock)
    how = "recorded the pepper an interrupted rotation added" if done.finished_interrupted else ""
    emit_object(
        app_,
        done.as_json(),
        [
            f"Pepper {done.key_id} is now current{f' ({how})' if how else ''}; "
            f"{done.path} holds it and the older ones. Back this file up now."
        ],
    )


@app.command()
def status(ctx: typer.Context) -> None:
    """List the database's peppers: which is current, and what each still keys.

    An old pepper whose PIN hashes, live codes, audit events and unknown NIRs' counters are
    all 0 is needed no more: its line (`<id>:...`) can be deleted from the pepper file. An
    unknown NIR's failure counters move to the current pepper at its next wrong PIN or code; the
    others go once `purge` finds them past their retention. Audit events sealed with it
    need it until they are archived, and their archive for as long as it is kept. A letter
    printed with it that comes back once it is deleted is judged by dates, not by the
    address it bore (`letters returned`).

    Example: cpms-admin pepper status
    """
    from cpms_admin.operations import peppers
    from cpms_admin.pepper import FINISH_ROTATION, UNFINISHED_ROTATION, load_peppers

    app_ = app_context(ctx)
    at_hand = load_peppers(app_.settings)  # exit 5 when the pepper at hand is not this database's
    if at_hand.unrecorded is not None:
        warn(f"{UNFINISHED_ROTATION.format(at_hand.source, at_hand.unrecorded)}: {FINISH_ROTATION}")
    with app_.session() as session:
        uses = peppers.usage(session, now=app_.clock())
    emit_rows(
        app_,
        [use.as_json() for use in uses],
        [
            ("pepper", "Pepper"),
            ("current", "Current"),
            ("pin_hashes", "PIN hashes"),
            ("live_codes", "Live codes"),
            ("audit_events", "Audit events"),
            ("unknown_nir_counters", "Unknown NIRs"),
            ("removable", "Can be deleted"),
        ],
    )
