"""One module per command noun (`member`, `letters`, `portal`, ...), each a Typer app that
cli/app.py mounts; each parses, calls one service and prints."""
