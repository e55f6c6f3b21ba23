"""`make demo`: build a demo database under data/ and run the real commands, as a transcript.

Every step runs the installed `cpms-admin` in a subprocess, exactly as an agent or the cron
would, and prints the command line before its output: stdout and stderr as one stream, in
the order the command wrote them. Headings are bold only on a terminal without NO_COLOR.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import bcrypt

sys.path.insert(0, str(Path(__file__).parent))
from demo_members import ascii_only, demo_members, write_csv

from cpms_admin.french import PARIS
from cpms_admin.members.fields import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
DB = DATA / "demo.db"
LETTERS = DATA / "demo-letters"
DOSSIER = DATA / "demo-dossier.pdf"
CLI = str(Path(sys.executable).parent / "cpms-admin")
ENV = {
    **os.environ,
    "CPMS_DATABASE_URL": f"sqlite:///{DB}",
    "CPMS_AGENT": "demo.agent",
    "CPMS_MAIL_DIR": str(DATA / "demo-outbox"),
    # Unbuffered, so that a command's stdout and stderr reach the one pipe in the order the
    # command wrote them (a buffered stdout would come out last, after every log line).
    "PYTHONUNBUFFERED": "1",
}
ENV.pop("CPMS_SMTP_URL", None)


def bold(text: str, stream: TextIO = sys.stdout) -> str:
    """Bold on a terminal; plain text in a file or a pipe, or when NO_COLOR is set."""
    if os.environ.get("NO_COLOR") or not stream.isatty():
        return text
    return f"\033[1m{text}\033[0m"


def step(title: str) -> None:
    print("\n" + bold(f"== {title}"))


def run(*args: str, stdin: str | None = None, expect: int = 0) -> str:
    """Run the installed command; print what it wrote (stdout and stderr, in order)."""
    print(f"$ cpms-admin {shlex.join(args)}" + ("   (stdin: ******)" if stdin else ""))
    result = subprocess.run(
        [CLI, *args],
        input=stdin,
        env=ENV,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.stdout.strip():
        print("  " + result.stdout.rstrip().replace("\n", "\n  "))
    if result.returncode != expect:
        sys.exit(f"demo: expected exit {expect}, got {result.returncode}")
    return result.stdout


def today() -> str:
    """The day of the run in Paris, as an agent writes it in a reason: 30/11 on 30 November."""
    return f"{datetime.now(PARIS):%d/%m}"


def new_email(member: dict[str, str]) -> str:
    """A new address for the member, in their own name (as their old one was)."""
    name = ascii_only(f"{member['first_name']}.{member['last_name']}").lower().replace(" ", "")
    return f"{name}@nouveau-fournisseur.fr"


def try_this(db: Path = DB, cli: Path = Path(CLI)) -> str:
    """A command that works as printed, from the project's folder: the entry point where it
    is installed (cpms-admin need not be on PATH) and the demo database, whose pepper is the
    file beside it."""

    def shown(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    return shlex.join([shown(cli), "--db", f"sqlite:///{shown(db)}", "member", "list"])


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
    run("portal", "accept-terms", jean["nir"], stdin=f"{pin}\n")
    run("--json", "portal", "login", jean["nir"], stdin=f"{pin}\n")

    step("Three wrong PINs: one-minute cool-down and CAPTCHA; the agent diagnoses and unlocks")
    for _ in range(3):
        run("portal", "login", jean["nir"], stdin=f"{wrong}\n", expect=1)
    run("account", "status", jean["nir"])
    run("account", "unlock", jean["nir"], "--reason", "identité vérifiée au téléphone")
    run("portal", "login", jean["nir"], stdin=f"{pin}\n")

    step("An outsider with Jean's NIR: the same answer as a stranger, one budget of guesses")
    run("portal", "request-code", "2 91 12 75 123 456 35")  # no member: the same words
    run("portal", "request-code", jean["nir"])
    for _ in range(3):  # wrong codes count like wrong PINs: the third brings the cool-down
        run("portal", "set-pin", jean["nir"], "--with", "code", stdin=f"{wrong}\n{pin}\n{pin}\n",
            expect=1)  # fmt: skip
    run("account", "status", jean["nir"])
    run("account", "unlock", jean["nir"], "--reason", "tentatives d'un tiers, adhérent rappelé")

    step("No e-mail known: the request falls back to a letter by post")
    run("portal", "request-code", helene["nir"])
    run("code", "issue", helene["nir"], "--channel", "email", "--reason", "essai", expect=1)
    run("pin", "reset", jean["nir"], "--channel", "post", "--reason", "e-mail jamais reçu")
    run("member", "show", helene["nir"])


def addresses() -> None:
    step("Addresses as La Poste delivers them: six AFNOR lines, legal names, abroad")
    run(
        "member", "add", "--nir", "2 85 05 75 056 123 38", "--civility", "MME",
        "--first-name", "Jeanne", "--last-name", "de La Tour d'Auvergne-Lauraguais",
        "--address-complement", "Appartement 23",
        "--address-building", "Résidence Le Clos Saint-Martin",
        "--street", "145 boulevard du Maréchal de Lattre de Tassigny",
        "--postcode", "94 240", "--city", "l'hay les roses",
    )  # fmt: skip
    run("member", "show", "285057505612338")
    run(
        "member", "add", "--nir", "1 78 06 99 350 042 81", "--civility", "M",
        "--first-name", "Youssef", "--last-name", "Benali", "--street", "12 boulevard Zerktouni",
        "--postcode", "20000", "--city", "Casablanca", "--country", "MA",
    )  # fmt: skip
    run(
        "member", "add", "--nir", "1 85 05 75 056 124 87", "--last-name", "Erreur",
        "--first-name", "Ville", "--street", "1 rue X", "--postcode", "75002", "--city", "Lyon",
        expect=2,
    )  # fmt: skip


def migration() -> None:
    """A legacy portal's export comes in (French Excel: `;`, Windows-1252, CRLF), one row
    with a mistyped NIR and one member carrying their old bcrypt PIN hash; then a code
    campaign for the newcomers and the campaign e-mails go out."""
    started = datetime.now(UTC).replace(microsecond=0).isoformat()
    legacy = demo_members(12, seed=1999)
    legacy[3]["nir"] = legacy[3]["nir"][:-2] + f"{(int(legacy[3]['nir'][-2:]) + 1) % 97:02d}"
    old_pin = "271828"
    legacy[0]["pin_hash"] = bcrypt.hashpw(old_pin.encode(), bcrypt.gensalt(rounds=10)).decode()
    export = DATA / "demo-legacy-export.csv"
    write_csv(export, legacy, columns=[*COLUMNS, "pin_hash"], delimiter=";", encoding="cp1252")
    step("Migration: a legacy export comes in (dry run first, then for real, then again)")
    source, errors = str(export.relative_to(ROOT)), str(DATA.relative_to(ROOT) / "demo-errors.csv")
    run("members", "import", source, "--dry-run", expect=1)
    run("members", "import", source, "--errors", errors, expect=1)
    print(f"  ({errors}: " + (DATA / "demo-errors.csv").read_text().splitlines()[1] + ")")
    run("--json", "members", "import", source, expect=1)
    step("A migrated member logs in with their old PIN (its bcrypt hash is upgraded on the way)")
    run("--json", "portal", "login", legacy[0]["nir"], stdin=f"{old_pin}\n")
    step("Code campaign: every newcomer without a PIN gets a code, by e-mail or by post")
    campaign = [
        "code",
        "campaign",
        "--no-pin",
        "--imported-since",
        started,
        "--wording",
        "migration",
    ]
    run(*campaign, "--reason", f"migration du {today()}", "--dry-run")
    run(*campaign, "--reason", f"migration du {today()}")
    run("mail", "send")
    step("Exports for people who open them: a workbook, and a CSV French Excel opens as is")
    workbook = str((DATA / "demo-members.xlsx").relative_to(ROOT))
    run("members", "export", "--format", "xlsx", "--out", workbook)
    run("members", "export", "--excel", "--out", str(DATA.relative_to(ROOT) / "demo-excel.csv"))
    run("--json", "members", "import", workbook, "--dry-run")  # every member is there already


def nightly() -> Path:
    step("The nightly cron: every pending letter rendered once, for the print house")
    run("letters", "list", "--status", "pending", "--limit", "5")
    run("letters", "batch", "--out", str(LETTERS.relative_to(ROOT)), "--dry-run")
    run("letters", "batch", "--out", str(LETTERS.relative_to(ROOT)))
    run("letters", "batch", "--out", str(LETTERS.relative_to(ROOT)))  # nothing left: exit 0
    (batch,) = LETTERS.glob("batch-*")
    return batch


def privacy(member: dict[str, str]) -> Path:
    step("Privacy: a member's dossier (right of access), and what retention would drop")
    run("member", "dossier", member["nir"], "--out", str(DOSSIER.relative_to(ROOT)))
    run("purge", "--dry-run")  # a new database: nothing is past its period yet
    return DOSSIER


def reset() -> None:
    for path in (DB, DB.with_name("demo.db-wal"), DB.with_name("demo.db-shm"), DOSSIER):
        path.unlink(missing_ok=True)
    for folder in ("demo-outbox", "demo-letters"):
        shutil.rmtree(DATA / folder, ignore_errors=True)


def main() -> None:
    reset()
    members = demo_members(36)
    write_csv(DATA / "demo-members.csv", members)

    step("Schema (creates data/pepper the first time); whoever creates it is its first admin")
    run("db", "upgrade")
    run("agent", "add", "alice", "--role", "support")  # an OS user, on SQLite
    run("agent", "add", "cron-cpms", "--role", "nightly")  # the cron's identity
    run("agent", "list")
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
    helene = members[1]
    run("member", "list", "--search", "helene", "--limit", "5")
    run("member", "show", helene["nir"])
    run(
        "member",
        "update",
        helene["nir"],
        "--email",
        new_email(helene),
        "--reason",
        f"appel du {today()}",
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
    addresses()
    credentials(members[0], next(m for m in members if not m["email"]))
    migration()
    batch = nightly()
    dossier = privacy(helene)
    run("audit", "list", "--limit", "8")
    pdfs = ", ".join(path.name for path in sorted(batch.glob("*.pdf")))
    print(
        f"\nWhere to look:\n"
        f"  letters for the print house: {batch.relative_to(ROOT)}/ ({pdfs}, manifest.json,"
        f" index.csv)\n"
        f"  e-mails sent (file transport): {(DATA / 'demo-outbox').relative_to(ROOT)}/\n"
        f"  a member's dossier (right of access): {dossier.relative_to(ROOT)}\n"
        f"  database: {DB.relative_to(ROOT)}, its pepper beside it\n"
        f"  try: {try_this()}"
    )


if __name__ == "__main__":
    main()
