"""Security codes in the database: what the letter batch and the e-mail queue rely on."""

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from cpms_admin.credentials import codes, delivery
from cpms_admin.db import transaction
from cpms_admin.french import PARIS
from cpms_admin.letters.queue import queue_letter
from cpms_admin.models import Member, pk
from cpms_admin.pepper import load_peppers
from cpms_admin.settings import Settings
from tests.audit_helpers import audit_of
from tests.cred_helpers import codes_of, email_code, outbox, set_pin
from tests.factories import make_member
from tests.harness import TEST_PEPPER, Cli, FakeClock
from tests.import_helpers import person, write_csv

PEPPER = TEST_PEPPER.encode()


@pytest.fixture
def member(session: Session) -> Member:
    return make_member(session, welcome=False)


def test_store_code_is_what_the_letter_batch_calls_at_print_time(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    letter = queue_letter(session, member=member, kind="security_code", now=clock())
    emailed = codes.issue_code(
        session,
        member_id=pk(member),
        purpose="first_login",
        channel="email",
        pepper=PEPPER,
        now=clock.now,
        settings=settings,
    )
    printed = codes.store_code(
        session,
        member_id=pk(member),
        purpose="first_login",
        channel="post",
        code="004213",
        pepper=PEPPER,
        now=clock.now,
        settings=settings,
        letter_id=pk(letter),
    )
    session.commit()
    assert printed.expires_at == datetime(2026, 12, 23, 23, 0, tzinfo=UTC)  # Paris midnight
    assert emailed.row.expires_at == clock.now + timedelta(minutes=10)
    assert printed.letter_id == letter.id
    assert "004213" not in printed.code_hash
    assert [row.status for row in codes_of(session, member)] == ["revoked", "pending"]
    # A printed code still works on day 29, and no longer on day 31.
    clock.advance(days=29)
    assert set_pin(session, settings, clock, member.nir, "004213", using="code").ok


def test_post_codes_work_to_the_end_of_the_day_their_letter_gives(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    """Made on 23 November, a letter says "valable jusqu'au 23 décembre": all that day."""
    codes.store_code(
        session,
        member_id=pk(member),
        purpose="first_login",
        channel="post",
        code="004213",
        pepper=PEPPER,
        now=clock.now,
        settings=settings,
    )
    session.commit()
    assert codes.postal_last_day(clock.now, settings) == date(2026, 12, 23)
    late_evening = datetime(2026, 12, 23, 23, 59, tzinfo=PARIS).astimezone(UTC)
    assert codes.live_code(session, member_id=pk(member), now=late_evening) is not None
    clock.now = datetime(2026, 12, 24, 0, 0, 1, tzinfo=PARIS).astimezone(UTC)
    result = set_pin(session, settings, clock, member.nir, "004213", using="code")
    assert result.reason == "dead_code"


def test_issued_code_hides_its_clear_value_from_repr(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    issued = codes.issue_code(
        session,
        member_id=pk(member),
        purpose="pin_reset",
        channel="email",
        pepper=PEPPER,
        now=clock.now,
        settings=settings,
    )
    assert issued.clear not in repr(issued)
    assert issued.clear not in repr(issued.row)


def test_check_code_spends_a_try_only_when_wrong_and_never_consumes(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    codes.store_code(
        session,
        member_id=pk(member),
        purpose="pin_reset",
        channel="email",
        code="246810",
        pepper=PEPPER,
        now=clock.now,
        settings=settings,
    )
    session.commit()

    def check(code: str, pepper: bytes = PEPPER) -> codes.CodeCheck:
        live = codes.live_code(session, member_id=pk(member), now=clock.now, lock=True)
        result = codes.check_code(session, live=live, code=code, pepper=pepper, settings=settings)
        session.commit()
        return result

    assert (check("246810").outcome, check("246810").tries_left) == ("ok", 5)
    assert (check("246811").outcome, check("246811").tries_left) == ("wrong_code", 3)
    assert check("246810", pepper=b"another-pepper").outcome == "wrong_code"
    row = check("246810").code
    assert row is not None and codes.consume_code(session, code_id=pk(row), now=clock.now)
    assert not codes.consume_code(session, code_id=pk(row), now=clock.now)
    session.commit()
    assert check("246810").outcome == "dead_code"


def test_purposes_and_channels_are_checked(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    with pytest.raises(ValueError, match="purpose"):
        codes.store_code(
            session,
            member_id=pk(member),
            purpose="login",
            channel="post",
            code="004213",
            pepper=PEPPER,
            now=clock.now,
            settings=settings,
        )
    with pytest.raises(ValueError, match="channel"):
        codes.store_code(
            session,
            member_id=pk(member),
            purpose="pin_reset",
            channel="sms",
            code="004213",
            pepper=PEPPER,
            now=clock.now,
            settings=settings,
        )


def test_a_code_is_e_mailed_only_once_its_transaction_committed(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    """Called inside an open transaction, `email_code` refuses before anything leaves: the
    e-mail would bear a code that may still roll back, and its failure path would roll back
    the caller's work."""
    with pytest.raises(RuntimeError, match="not inside a transaction"), transaction(session):
        issued = delivery.issue_email_code(
            session,
            member_id=pk(member),
            purpose="first_login",
            requested_by=None,
            pepper=load_peppers(settings),
            settings=settings,
            now=clock.now,
        )
        delivery.email_code(
            session, member=member, issued=issued, agent="agent.test", settings=settings,
            clock=clock,
        )  # fmt: skip
    assert outbox(settings) == []
    assert codes_of(session, member) == []


def test_a_code_e_mailed_to_an_address_since_replaced_no_longer_works(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """An agent who corrects a wrong address (by hand or by an import) must not leave the
    code that went there working: whoever reads that mailbox and knows the NIR could set
    the member's PIN. A letter's code stops as its address changes; so does an e-mail's."""
    wrong = make_member(session, email="pas-le-sien@example.fr")
    moved = make_member(session, email="ancienne@example.fr")
    renamed = make_member(session, email="garde@example.fr")
    codes = {m.nir: email_code(session, settings, clock, m) for m in (wrong, moved, renamed)}
    cleared = cli("member", "update", wrong.nir, "--clear-email", "--reason", "not theirs")
    assert cleared.exit_code == 0, cleared.output
    assert "the code e-mailed to the former address no longer works" in cleared.stderr
    (event,) = [e for e in audit_of(cli, wrong.nir) if e["action"] == "member.update"]
    assert event["details"]["emailed_codes_revoked"] == [codes_of(session, wrong)[0].id]
    capitals = cli("member", "update", renamed.nir, "--email", "GARDE@example.fr")
    assert capitals.exit_code == 0, capitals.output  # the same mailbox: its code still works
    assert "no longer works" not in capitals.stderr
    rows = [person(1, nir=moved.nir, email="nouvelle@example.fr"),
            person(2, nir=renamed.nir, email="garde@example.fr", first_name="Autre")]  # fmt: skip
    file = write_csv(tmp_path / "m.csv", rows)
    for run in (["--dry-run"], []):  # the dry run says what the run then does
        imported = cli("--json", "members", "import", str(file), "--on-conflict", "update", *run)
        assert imported.exit_code == 0, imported.output
        assert json.loads(imported.stdout)["emailed_codes_revoked"] == 1
    story = audit_of(cli, moved.nir)
    told = {e["details"]["change"] for e in story if e["action"] == "members.import.member"}
    assert told == {"updated", "emailed_code_revoked"}
    session.expire_all()
    for member, works in ((wrong, False), (moved, False), (renamed, True)):
        done = set_pin(session, settings, clock, member.nir, codes[member.nir])
        assert done.ok is works, (member.email, done.reason)
        assert [c.status for c in codes_of(session, member)] == ["used" if works else "revoked"]
