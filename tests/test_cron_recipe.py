"""The crontab lines of the README, run as cron runs them: `env -i` with only the variables
the README names, another working directory, no terminal. The codes the batch prints and
`mail send` e-mails must work when the member types them, checked from the agent's usual
folder; `purge` then deletes the batch whose codes are used; a night with nothing to do
prints nothing at all."""

import json
import subprocess
from pathlib import Path

import pytest

from cpms_admin.settings import Settings
from tests.cred_helpers import PIN, mailed_codes
from tests.factories import make_nir
from tests.letters_helpers import printed_codes
from tests.process_helpers import CPMS

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"


def as_cron(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`env -i VAR=... cpms-admin ...`: nothing inherited, not even PATH or HOME."""
    command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(CPMS), *args]
    return subprocess.run(
        command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )


def test_the_readme_crontab_runs_anywhere_and_its_codes_work(tmp_path: Path) -> None:
    text = README.read_text()
    assert "CPMS_DATABASE_URL=sqlite:////srv/cpms/cpms.db" in text  # the recipe tested here
    srv, agent, cron_home = tmp_path / "srv", tmp_path / "agent", tmp_path / "cron"
    for folder in (agent, cron_home):
        folder.mkdir()
    env = {  # what the crontab sets, with this test's folders for /srv/cpms and /srv/print
        "CPMS_DATABASE_URL": f"sqlite:///{srv / 'cpms.db'}",
        "CPMS_MAIL_DIR": str(srv / "outbox"),
        "CPMS_AUDIT_ARCHIVE_DIR": str(srv / "audit-archive"),
        "PATH": "/usr/bin:/bin",
    }
    # The agent's side, from their own folder: a database, a member without e-mail (an
    # enrolment letter waits) and one with e-mail (a campaign e-mail waits).
    assert as_cron("db", "upgrade", "--create-dirs", env=env, cwd=agent).returncode == 0
    by_post, by_mail = make_nir(), make_nir()
    address = ["--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon"]
    for nir, extra in ((by_post, []), (by_mail, ["--email", "m@example.fr", "--no-welcome"])):
        added = as_cron("member", "add", "--nir", nir, "--last-name", "Roux", "--first-name",
                        "Léa", *address, *extra, env=env, cwd=agent)  # fmt: skip
        assert added.returncode == 0, added.stderr
    campaign = ("code", "campaign", "--no-pin", "--channel", "email", "--reason", "rentrée")
    assert as_cron(*campaign, env=env, cwd=agent).returncode == 0
    # The night, from cron's folder.
    out = tmp_path / "print"
    batch = as_cron("--json", "letters", "batch", "--out", str(out), env=env, cwd=cron_home)
    assert batch.returncode == 0, batch.stderr
    mail = as_cron("mail", "send", env=env, cwd=cron_home)
    assert mail.returncode == 0, mail.stderr
    assert not any(p.name == "pepper" for p in cron_home.rglob("*"))  # no second pepper
    # The members' side, checked from the agent's folder.
    ((_, printed),) = printed_codes(json.loads(batch.stdout)).items()
    (emailed,) = mailed_codes(Settings(mail_dir=str(srv / "outbox")))
    for nir, code in ((by_post, printed), (by_mail, emailed)):
        done = subprocess.run(
            [str(CPMS), "portal", "set-pin", nir, "--with", "code"],
            env=env, cwd=agent, input=f"{code}\n{PIN}\n{PIN}\n", capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    # The purge that night: the batch's only code is used, so its files go.
    purged = as_cron("purge", env=env, cwd=cron_home)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("Deleted 1 letters batch, the oldest ") and not purged.stderr
    assert not any(out.iterdir())
    # The next night has nothing to do: cron has nothing to mail.
    for job in (("letters", "batch", "--out", str(out)), ("mail", "send"), ("purge",)):
        quiet = as_cron(*job, env=env, cwd=cron_home)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", ""), job
    # A failure is one line on stderr and a non-zero exit.
    (tmp_path / "a-file").write_text("")
    broken = as_cron("letters", "batch", "--out", str(tmp_path / "a-file" / "print"),
                     env=env, cwd=cron_home)  # fmt: skip
    assert broken.returncode != 0 and len(broken.stderr.splitlines()) == 1, broken.stderr
    assert broken.stderr.startswith("Error: ") and broken.stdout == ""
