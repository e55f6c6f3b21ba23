"""`code campaign`: who is selected, by which channel, dry runs that tell the truth, re-runs
that queue nothing twice, one audit event, and a campaign feeding the nightly batch.
(Speed: bench/campaign.py.)"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from cpms_admin.bulk.campaign import CampaignCounts, Selection, run_campaign
from cpms_admin.credentials.codes import issue_code
from cpms_admin.db import CAMPAIGN_RUN, one_run
from cpms_admin.models import Account, AuditEvent, Letter, Member, OutgoingMail, pk
from cpms_admin.settings import Settings
from tests.audit_helpers import audit_of, run_event, run_events, run_id
from tests.factories import make_member, make_nir
from tests.harness import Cli, FakeClock
from tests.import_helpers import person, snap, write_csv
from tests.letters_helpers import (
    check_batch_dir,
    code_works,
    letter_text,
    manifests,
    printed_code,
)

HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"


def member(
    session: Session,
    name: str,
    *,
    email: bool = True,
    pin: bool = False,
    logged_in: bool = False,
    closed: bool = False,
    imported_at: datetime | None = None,
) -> Member:
    """A member without the enrolment letter (it would count as a code on its way)."""
    made = make_member(
        session,
        welcome=False,
        last_name=name,
        email=f"{name.lower()}@example.fr" if email else None,
    )
    account = session.get(Account, made.id)
    assert account is not None
    account.pin_hash = HASH if pin else None
    account.last_login_at = datetime(2026, 1, 5, tzinfo=UTC) if logged_in else None
    made.imported_at = imported_at
    if closed:
        made.status = "closed"
    session.add_all([account, made])
    session.commit()
    return made


@pytest.fixture
def people(session: Session) -> dict[str, Member]:
    """A: never logged in, no PIN, e-mail. B: same, no e-mail. C: PIN from an import, never
    logged in. D: PIN, logged in. E: closed. F: imported last week, no PIN, e-mail."""
    return {
        "A": member(session, "Arnaud"),
        "B": member(session, "Bernard", email=False),
        "C": member(session, "Colin", pin=True),
        "D": member(session, "Durand", pin=True, logged_in=True),
        "E": member(session, "Etienne", closed=True),
        "F": member(session, "Fabre", imported_at=datetime(2026, 11, 16, tzinfo=UTC)),
    }


def queued(session: Session) -> dict[int, tuple[str, str, str]]:
    """member id -> (channel, kind, purpose) of what is waiting for them."""
    session.rollback()
    items: dict[int, tuple[str, str, str]] = {}
    for letter in session.exec(select(Letter).where(Letter.status == "pending")):
        items[letter.member_id] = ("post", letter.kind, letter.purpose)
    for mail in session.exec(select(OutgoingMail).where(OutgoingMail.status == "pending")):
        assert mail.member_id not in items
        items[mail.member_id] = ("email", mail.kind, mail.purpose)
    return items


def campaign(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("--json", "code", "campaign", *args, "--reason", "migration 2026")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_never_logged_in_with_channel_auto(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    counts = campaign(cli, "--never-logged-in")
    assert counts == {
        "selected": 5,
        "letters": 1,
        "emails": 3,
        "already_pending": 0,
        "no_email": 0,
        "undeliverable": 0,
        "closed": 1,
        "unknown": 0,
        "dry_run": False,
    }
    a, b, c, f = (people[k].id for k in "ABCF")
    assert queued(session) == {
        a: ("email", "security_code", "first_login"),
        b: ("post", "security_code", "first_login"),
        c: ("email", "security_code", "pin_reset"),  # an imported PIN: a reset code
        f: ("email", "security_code", "first_login"),
    }


def test_no_pin_by_post_only(cli: Cli, session: Session, people: dict[str, Member]) -> None:
    counts = campaign(cli, "--no-pin", "--channel", "post")
    assert (counts["letters"], counts["emails"], counts["closed"]) == (3, 0, 1)
    assert {channel for channel, _, _ in queued(session).values()} == {"post"}
    assert set(queued(session)) == {people[k].id for k in "ABF"}


def test_channel_email_leaves_out_members_without_an_address(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    counts = campaign(cli, "--no-pin", "--never-logged-in", "--channel", "email")
    assert (counts["emails"], counts["letters"], counts["no_email"]) == (2, 0, 1)
    assert set(queued(session)) == {people["A"].id, people["F"].id}


def test_imported_since_and_from_file_combine(
    cli: Cli, session: Session, people: dict[str, Member], tmp_path: Path
) -> None:
    assert campaign(cli, "--imported-since", "2026-11-16", "--dry-run")["selected"] == 1
    assert campaign(cli, "--imported-since", "2026-11-16T00:00:01", "--dry-run")["selected"] == 0
    nirs = tmp_path / "nirs.txt"
    a, d = people["A"].nir, people["D"].nir
    spaced = f"{d[0]} {d[1:3]} {d[3:5]} {d[5:7]} {d[7:10]} {d[10:13]} {d[13:]}"
    nirs.write_text(f"nir\n{a}\n\n# pas celui-ci\n{spaced}\n{a}\n{make_nir(999)}\n")
    counts = campaign(cli, "--from-file", str(nirs))
    assert (counts["selected"], counts["emails"], counts["unknown"]) == (2, 2, 1)
    assert queued(session) == {
        people["A"].id: ("email", "security_code", "first_login"),
        people["D"].id: ("email", "security_code", "pin_reset"),
    }
    both = campaign(cli, "--from-file", str(nirs), "--never-logged-in", "--dry-run")
    assert (both["selected"], both["already_pending"]) == (1, 1)
    assert both["unknown"] == 1  # D is a member, only left out by --never-logged-in
    again = cli("code", "campaign", "--from-file", str(nirs), "--dry-run")
    assert again.stdout == (
        "Would queue 0 letters and 0 e-mails for 2 selected members.\n"
        "  2 members already have a code on its way (letter, e-mail or live code)\n"
        "  1 NIR of the file matches no member\n"
        "Dry run: nothing was queued.\n"
    )


def test_dry_run_counts_what_the_real_run_queues_and_writes_nothing(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    before = snap(session)
    dry = campaign(cli, "--never-logged-in", "--dry-run")
    human = cli("code", "campaign", "--never-logged-in", "--dry-run")
    assert snap(session) == before
    assert human.stdout == (  # the counts' words agree with them ("1 are closed" was one)
        "Would queue 1 letter and 3 e-mails for 5 selected members.\n"
        "  1 member is closed\n"
        "Dry run: nothing was queued.\n"
    )
    real = campaign(cli, "--never-logged-in")
    assert dry == {**real, "dry_run": True}


def test_running_a_campaign_again_queues_nothing_twice(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    campaign(cli, "--never-logged-in")
    first = queued(session)
    again = campaign(cli, "--never-logged-in")
    assert (again["letters"], again["emails"], again["already_pending"]) == (0, 0, 4)
    assert queued(session) == first
    session.rollback()
    assert len(session.exec(select(Letter)).all()) == 1
    assert len(session.exec(select(OutgoingMail)).all()) == 3


def test_a_second_campaign_while_one_queues_is_refused_and_queues_nothing(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    """On PostgreSQL two campaigns at once each saw the other's members as having nothing
    on its way, and queued every one of them twice."""
    with one_run(session, CAMPAIGN_RUN):
        result = cli("code", "campaign", "--never-logged-in", "--reason", "twice")
        assert (result.exit_code, result.stderr) == (
            4,
            "Error: another code campaign is running\n",
        )
        assert cli("code", "campaign", "--never-logged-in", "--dry-run").exit_code == 0
    session.rollback()
    assert session.exec(select(OutgoingMail)).all() == []
    assert campaign(cli, "--never-logged-in")["emails"] == 3  # the lock went with its run


def test_a_member_with_a_welcome_letter_waiting_is_left_alone(cli: Cli, session: Session) -> None:
    newcomer = make_member(session)  # enrolment letter queued, with a code at print time
    counts = campaign(cli, "--no-pin")
    assert (counts["already_pending"], counts["letters"] + counts["emails"]) == (1, 0)
    assert queued(session) == {newcomer.id: ("post", "welcome", "first_login")}


def test_a_member_with_a_live_code_is_left_alone_until_it_expires(
    cli: Cli, session: Session, clock: FakeClock, settings: Settings
) -> None:
    printed = member(session, "Petit")  # say, a letter printed last week: its code is live
    issue_code(
        session,
        member_id=pk(printed),
        purpose="first_login",
        channel="post",
        pepper=b"pepper",
        now=clock.now,
        settings=settings,
    )
    session.commit()
    assert campaign(cli, "--no-pin")["already_pending"] == 1
    clock.advance(days=settings.code_post_ttl_days + 1)  # past the end of its last day
    counts = campaign(cli, "--no-pin")
    assert (counts["already_pending"], counts["emails"]) == (0, 1)


def test_a_run_has_its_event_then_a_closing_event_with_the_counts_and_reason(
    cli: Cli, session: Session, people: dict[str, Member]
) -> None:
    campaign(cli, "--no-pin", "--channel", "auto")
    session.rollback()
    query = select(AuditEvent).where(AuditEvent.action == "code.campaign")
    started, closing = session.exec(query.order_by(col(AuditEvent.seq))).all()
    for event in (started, closing):
        assert (event.label, event.reason) == ("agent.test", "migration 2026")
    assert (started.outcome, closing.outcome) == ("started", "ok")
    facts, counts = json.loads(started.details), json.loads(closing.details)
    assert (facts["channel"], facts["no_pin"]) == ("auto", True)
    assert (counts["letters"], counts["emails"], counts["run"]) == (1, 2, started.id)


def campaign_story(cli: Cli, people: dict[str, Member]) -> dict[str, list[dict[str, Any]]]:
    """What `audit list --nir` shows of campaigns, for each of `people`."""
    return {
        name: [e for e in audit_of(cli, person.nir) if e["action"].startswith("code.campaign")]
        for name, person in people.items()
    }


def test_audit_list_nir_shows_the_campaign_that_queued_the_members_code(
    cli: Cli, people: dict[str, Member]
) -> None:
    campaign(cli, "--no-pin", "--dry-run")
    assert all(story == [] for story in campaign_story(cli, people).values())  # dry: none
    campaign(cli, "--no-pin")
    run = run_id(run_event(cli, "code.campaign"))
    (started,) = [e for e in run_events(cli, "code.campaign") if e["id"] == run]
    stories = campaign_story(cli, people)
    for name, change in (("A", "email"), ("B", "letter"), ("F", "email")):
        (event,) = stories[name]
        assert (event["action"], event["label"], event["reason"], event["at"]) == (
            "code.campaign.member",
            "agent.test",
            "migration 2026",
            started["at"],
        )
        assert event["details"] == {"change": change, "run": run}
    # Left out (a PIN already, or closed): the campaign queued nothing for them.
    assert stories["C"] == stories["D"] == stories["E"] == []
    campaign(cli, "--no-pin")  # again: every one has a code on its way, nothing new
    assert campaign_story(cli, people) == stories


class Stop(Exception):
    pass


def test_a_campaign_stopped_half_way_has_the_events_of_its_committed_batches(
    session: Session, people: dict[str, Member]
) -> None:
    def stop(counts: CampaignCounts) -> None:  # after the first batch's commit
        raise Stop

    with pytest.raises(Stop):
        run_campaign(
            session,
            selection=Selection(never_logged_in=True),
            channel="auto",
            reason="migration 2026",
            agent="agent.test",
            on_progress=stop,
            batch_size=3,  # A, B, C: C has a PIN but never logged in: all three get a code
        )
    session.rollback()
    # The run's event, and no closing event: the run did not end.
    (run,) = session.exec(select(AuditEvent).where(AuditEvent.action == "code.campaign")).all()
    assert (run.outcome, json.loads(run.details)["no_pin"]) == ("started", False)
    # What it wrote, exactly: the codes of its first batch, and their members' events.
    first_batch = sorted(pk(people[name]) for name in "ABC")
    assert sorted(queued(session)) == first_batch
    per_member = select(AuditEvent).where(AuditEvent.action == "code.campaign.member")
    events = session.exec(per_member).all()
    assert sorted(e.member_id for e in events) == first_batch
    assert {json.loads(e.details)["run"] for e in events} == {run.id}
    assert sorted(json.loads(e.details)["change"] for e in events) == ["email", "email", "letter"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "select members: give --never-logged-in, --no-pin, --from-file or --imported-since"),
        (["--no-pin", "--imported-since", "last week"], "--imported-since must be an ISO date"),
        (
            ["--imported-since", "0001-01-01T00:00:00+01:00"],
            "--imported-since '0001-01-01T00:00:00+01:00' is out of the calendar's range",
        ),
        (["--from-file", "/nonexistent/nirs.txt"], "cannot read the NIR list"),
    ],
)
def test_bad_selections_are_exit_2_and_change_nothing(
    cli: Cli, session: Session, people: dict[str, Member], args: list[str], message: str
) -> None:
    before = snap(session)
    result = cli("code", "campaign", *args, "--reason", "x")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert snap(session) == before


def test_a_bad_nir_in_the_file_refuses_the_whole_campaign(
    cli: Cli, session: Session, people: dict[str, Member], tmp_path: Path
) -> None:
    nirs = tmp_path / "nirs.txt"
    nirs.write_text(f"{people['A'].nir}\n185057800608492\n")
    before = snap(session)
    result = cli("code", "campaign", "--from-file", str(nirs), "--reason", "x")
    assert result.exit_code == 2
    assert f"{nirs}: line 2: invalid NIR '185057800608492'" in result.stderr
    assert snap(session) == before


def test_a_reason_is_required(cli: Cli, session: Session, people: dict[str, Member]) -> None:
    before = snap(session)
    for reason in ([], ["--reason", "  "]):
        result = cli("code", "campaign", "--no-pin", *reason)
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == (
            "Error: a reason is required to run a campaign (--reason, recorded in the audit log)\n"
        )
    assert snap(session) == before


def test_a_dry_run_needs_no_reason(cli: Cli, session: Session, people: dict[str, Member]) -> None:
    before = snap(session)
    result = cli("code", "campaign", "--no-pin", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("Dry run: nothing was queued.\n")
    assert snap(session) == before
    given = cli("code", "campaign", "--no-pin", "--dry-run", "--reason", "bad\nline")
    assert given.exit_code == 2  # a reason given is checked as the real run would
    assert given.stderr.startswith("Error: the reason must be one line")


@pytest.mark.slow
def test_a_campaign_feeds_the_nightly_batch(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Imported members without a PIN get a campaign letter; the nightly batch prints it with
    a code that lets them set their PIN; a second campaign leaves them alone."""
    rows = [person(n, email=None) for n in (501, 502)] + [person(503)]
    assert cli("members", "import", str(write_csv(tmp_path / "m.csv", rows))).exit_code == 0
    counts = campaign(cli, "--no-pin", "--imported-since", clock.now.isoformat())
    assert (counts["letters"], counts["emails"]) == (2, 1)

    out = tmp_path / "print"
    printed = cli("--json", "letters", "batch", "--out", str(out))
    assert printed.exit_code == 0, printed.output
    ((directory, manifest),) = manifests(out)
    check_batch_dir(directory, manifest)
    assert [entry["kind"] for entry in manifest["letters"]] == ["security_code"] * 2
    session.rollback()
    campaign_letters = session.exec(select(Letter).order_by(col(Letter.id))).all()
    assert [entry["letter_id"] for entry in manifest["letters"]] == [
        letter.id for letter in campaign_letters
    ]
    for entry in manifest["letters"]:
        code = printed_code(letter_text(directory, entry))
        assert code_works(session, settings, clock, entry["letter_id"], code)

    again = campaign(cli, "--no-pin", "--imported-since", clock.now.isoformat())
    assert (again["letters"], again["emails"], again["already_pending"]) == (0, 0, 1)
