"""Which modules of cpms_admin a command's code runs through, for docs/architecture.md.

    .venv/bin/python scripts/flow_modules.py

Builds a scratch database, then runs the three flows the architecture page follows (a wrong
PIN at `portal login`, the nightly `letters batch`, a `members import`) in a subprocess each,
recording every cpms_admin module one of whose functions ran (importing a module is not
running it). The shared kernel, the CLI's own plumbing and the rights check every command
passes are listed apart from the capability modules a reader has to open.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

KERNEL = {
    "audit",
    "audit_chain",
    "clock",
    "db",
    "db_insert",
    "english",
    "errors",
    "faults",
    "french",
    "models",
    "pepper",
    "private_files",
    "settings",
    "vocabulary",
    "migrations",
}
# What every command runs around its own code: the CLI's plumbing (the stop signals' handlers
# included), and the rights check.
PLUMBING = {"cli.app", "cli.context", "cli.output", "cli.signals", "agents"}
NIR = "185057800608491"
EXIT = "exit code"  # the traced child's last line of stderr: "exit code N"


def trace(argv: list[str], stdin: str) -> None:
    """In the child: run the CLI with a profiler noting the modules whose code ran."""
    import io

    seen: set[str] = set()

    def profile(frame, event, _arg):  # type: ignore[no-untyped-def]
        if event == "call":
            name = frame.f_globals.get("__name__", "")
            if name.startswith("cpms_admin."):
                seen.add(name.removeprefix("cpms_admin."))

    sys.stdin = io.StringIO(stdin)
    sys.argv = ["cpms-admin", *argv]
    from cpms_admin.cli.app import main

    _import_everything()  # what runs at import (tables, caches) is not the command's path

    code: int | str | None = 0
    sys.setprofile(profile)
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.setprofile(None)
    print("\n".join(sorted(seen)), file=sys.stderr)
    print(f"{EXIT} {code or 0}", file=sys.stderr)


def _import_everything() -> None:
    import importlib
    import pkgutil

    import cpms_admin

    for module in pkgutil.walk_packages(cpms_admin.__path__, "cpms_admin."):
        if module.name.startswith(("cpms_admin.migrations", "cpms_admin.__main__")):
            continue  # run by Alembic, and the command itself
        importlib.import_module(module.name)


def run(env: dict[str, str], *argv: str, exit_code: int = 0, stdin: str = "") -> set[str]:
    """The modules the command ran through; it must end with `exit_code`, or the count would be
    of a path cut short (a missing font stops the batch before it renders a letter)."""
    result = subprocess.run(
        [sys.executable, __file__, "--trace", *argv],
        input=stdin,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    lines = result.stderr.splitlines()
    if not lines or lines[-1] != f"{EXIT} {exit_code}":
        sys.exit(f"cpms-admin {' '.join(argv)} did not exit {exit_code}:\n{result.stderr}")
    return {line for line in lines if line and " " not in line}


def cli(env: dict[str, str], *argv: str, stdin: str = "") -> None:
    cpms = Path(sys.executable).parent / "cpms-admin"
    subprocess.run(
        [str(cpms), *argv], input=stdin, env=env, text=True, check=True, capture_output=True
    )


def show(title: str, modules: set[str]) -> None:
    def shared(module: str) -> bool:
        return module.split(".")[0] in KERNEL or module in PLUMBING or module.startswith("agents.")

    capability = sorted(m for m in modules if not shared(m))
    kernel = sorted(m for m in modules if shared(m))
    print(f"{title}: {len(capability)} capability module(s), {len(kernel)} kernel/plumbing")
    print("  " + ", ".join(capability))
    print("  (kernel: " + ", ".join(kernel) + ")")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        env = {
            **os.environ,
            "CPMS_DATABASE_URL": f"sqlite:///{root / 'cpms.db'}",
            "CPMS_MAIL_DIR": str(root / "outbox"),
            "CPMS_AGENT": "flow.check",
        }
        env.pop("CPMS_SMTP_URL", None)
        cli(env, "db", "upgrade")
        cli(
            env,
            "member",
            "add",
            "--nir",
            NIR,
            "--last-name",
            "Martin",
            "--first-name",
            "Claire",
            "--street",
            "3 rue de la Paix",
            "--postcode",
            "75002",
            "--city",
            "Paris",
        )
        show(
            "portal login, wrong PIN",
            run(env, "portal", "login", NIR, exit_code=1, stdin="000000\n"),
        )
        show("letters batch", run(env, "letters", "batch", "--out", str(root / "print")))
        members = root / "members.csv"
        members.write_text(
            "nir,last_name,first_name,street,postcode,city\n"
            "292096983314464,Durand,Alice,1 place Bellecour,69002,Lyon\n"
        )
        show("members import", run(env, "members", "import", str(members)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trace"]:
        trace(sys.argv[2:], sys.stdin.read())
    else:
        main()
