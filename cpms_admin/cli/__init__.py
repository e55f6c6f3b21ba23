"""The command line: thin Typer commands that parse, call one service and print."""

import gc
import sys


def main() -> None:
    """The installed command (`cpms-admin`, `python -m cpms_admin`). Its imports, most of a
    command's start-up (SQLAlchemy, pydantic, Typer), run with the collector paused: they
    make many objects and free few, so its passes over them find next to nothing. What they
    made lives as long as the process, so it is then frozen out of the collector's sight: not
    walked again by each full collection, nor torn down at exit (bench/startup.py)."""
    from cpms_admin.cli import signals

    signals.install()
    gc.disable()
    try:
        from cpms_admin.cli.app import main as run
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM while it starts: no traceback
        message, code = signals.described(stop)
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(code)
    gc.freeze()
    gc.enable()
    run()
