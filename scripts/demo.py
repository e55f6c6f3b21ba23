"""`make demo`: build a demo database under data/ and run the real commands, as a transcript.

Every step runs the installed `cpms-admin` in a subprocess, exactly as an agent or the cron
would, and prints the command line before its output.
"""

import email
import email.message
import email.policy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo_members import demo_members, write_csv

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
DB = DATA / "demo.db"
CLI = str(Path(sys.executable).parent / "cpms-admin")
ENV = {
    **os.environ,
    "CPMS_DATABASE_URL": f"sqlite:///{DB}",
    "CPMS_AGENT": "demo.agent",
    "CPMS_MAIL_DIR": str(DATA / "demo-outbox"),
}
ENV.pop("CPMS_SMTP_URL", None)


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m")


def run(*args: str, stdin: str | None = None, expect: int = 0) -> str:
    print(f"$ cpms-admin {shlex.join(args)}" + ("   (stdin: ******)" if stdin else ""))
    result = subprocess.run(
        [CLI, *args], input=stdin, env=ENV, cwd=ROOT, text=True, capture_output=True, check=False
    )
    for stream in (result.stdout, result.stderr):
        if stream.strip():
            print("  " + stream.rstrip().replace("\n", "\n  "))
    if result.returncode != expect:
        sys.exit(f"demo: expected exit {expect}, got {result.returncode}")
    return result.stdout


def code_from_outbox(address: str) -> str:
    """The member's side: read the code in the newest e-mail sent to them."""
    outbox = DATA / "demo-outbox"
    for path in sorted(outbox.glob("*.eml"), reverse=True):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"].addresses[0].addr_spec == address:
            body = message.get_body(("plain",))
            assert isinstance(body, email.message.EmailMessage)
            found = re.search(r"code de sécurité : (\d{6})", body.get_content())
            if found:
                print(f"  (the member reads the code in {path.relative_to(ROOT)})")
                return found[1]
    sys.exit(f"demo: no code e-mailed to {address}")


def credentials(jean: dict[str, str], helene: dict[str, str]) -> None:
    pin, wrong = "482915", "605813"
    step("First login: a code by e-mail, then the member personalises a PIN")
    run("code", "issue", jean["nir"], "--channel", "email", "--reason", "premier accès")
    code = code_from_outbox(jean["email"])
    run("portal", "set-pin", jean["nir"], stdin=f"{code}\n{pin}\n{pin}\n")
    run("portal", "accept-terms", jean["nir"])
    run("--json", "portal", "login", jean["nir"], stdin=f"{pin}\n")

    step("Three wrong PINs: one-minute cool-down and CAPTCHA; the agent diagnoses and unlocks")
    for _ in range(3):
        run("portal", "login", jean["nir"], stdin=f"{wrong}\n", expect=1)
    run("account", "status", jean["nir"])
    run("account", "unlock", jean["nir"], "--reason", "identité vérifiée au téléphone")
    run("portal", "login", jean["nir"], stdin=f"{pin}\n")

    step("No e-mail known: the request falls back to a letter by post")
    run("portal", "request-code", helene["nir"])
    run("code", "issue", helene["nir"], "--channel", "email", "--reason", "essai", expect=1)
    run("pin", "reset", jean["nir"], "--channel", "post", "--reason", "e-mail jamais reçu")
    run("member", "show", helene["nir"])


def reset() -> None:
    for path in (DB, DB.with_name("demo.db-wal"), DB.with_name("demo.db-shm")):
        path.unlink(missing_ok=True)
    for folder in ("demo-outbox", "demo-letters"):
        shutil.rmtree(DATA / folder, ignore_errors=True)


def main() -> None:
    reset()
    members = demo_members(36)
    write_csv(DATA / "demo-members.csv", members)

    step("Schema (creates data/pepper the first time)")
    run("db", "upgrade")
    step("Members: an agent adds a few dozen (each gets an enrolment letter in the queue)")
    for row in members:
        options = [
            f"--{key.replace('_', '-')}={value}"
            for key, value in row.items()
            if value and key != "country"
        ]
        subprocess.run(
            [CLI, "member", "add", *options], env=ENV, cwd=ROOT, check=True, capture_output=True
        )
    print(f"$ cpms-admin member add --nir ... (x{len(members)})\n  added {len(members)} members")
    helene = members[1]["nir"]
    run("member", "list", "--search", "helene", "--limit", "5")
    run("member", "show", helene)
    run(
        "member",
        "update",
        helene,
        "--email",
        "helene.bernard@exemple.fr",
        "--reason",
        "appel du 23/11",
    )
    run(
        "member",
        "add",
        "--nir",
        "1 85 05 78 006 084 92",
        "--last-name",
        "Erreur",
        "--first-name",
        "Clé",
        "--street",
        "1 rue X",
        "--postcode",
        "75001",
        "--city",
        "Paris",
        expect=2,
    )
    credentials(members[0], next(m for m in members if not m["email"]))
    run("audit", "list", "--limit", "8")
    print(
        f"\nDemo database: {DB.relative_to(ROOT)}  (try: CPMS_DATABASE_URL=sqlite:///"
        f"{DB.relative_to(ROOT)} {Path(CLI).name} member list)"
    )


if __name__ == "__main__":
    main()
