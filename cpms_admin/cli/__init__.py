"""The command line: thin Typer commands that parse, call one service and print."""

import gc


def main() -> None:
    """The installed command (`cpms-admin`, `python -m cpms_admin`). Its imports, most of a
    command's start-up (SQLAlchemy, pydantic, Typer), run with the collector paused: they
    make many objects and free few, so its passes over them find next to nothing. What they
    made lives as long as the process, so it is then frozen out of the collector's sight: not
    walked again by each full collection, nor torn down at exit (bench/startup.py)."""
    gc.disable()
    from cpms_admin.cli.app import main as run

    gc.freeze()
    gc.enable()
    run()
