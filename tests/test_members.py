"""Members through the service layer, on every configured engine."""

import json
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from cpms_admin.errors import Conflict, FieldError, NotFound
from cpms_admin.members import records, views
from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.nir import format_nir
from cpms_admin.models import Account, AuditEvent, Letter
from tests.factories import make_member, make_nir, member_values, snapshot


def test_add_creates_account_welcome_letter_and_audit_in_one_go(session: Session) -> None:
    member = make_member(session)
    account = session.get(Account, member.id)
    assert account is not None and account.pin_hash is None
    letters = session.exec(select(Letter).where(Letter.member_id == member.id)).all()
    assert [(letter.kind, letter.purpose, letter.status) for letter in letters] == [
        ("welcome", "first_login", "pending")
    ]
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "member.add")).one()
    assert event.member_id == member.id and event.agent == "factory"
    assert json.loads(event.details)["welcome_letter_id"] == letters[0].id


def test_no_welcome_queues_nothing(session: Session) -> None:
    member = make_member(session, welcome=False)
    assert session.exec(select(Letter).where(Letter.member_id == member.id)).all() == []


def test_duplicate_nir_is_a_conflict_and_changes_nothing(session: Session) -> None:
    nir = make_nir()
    make_member(session, nir=nir)
    before = snapshot(session)
    with pytest.raises(Conflict, match="already exists"):
        make_member(session, nir=nir, last_name="Autre")
    session.rollback()
    assert snapshot(session) == before


def test_update_revalidates_and_audits_changed_fields(session: Session) -> None:
    member = make_member(session)
    records.update_member(
        session,
        nir=member.nir,
        changes={"email": None, "city": "Lyon 2e"},
        agent="alice",
        reason="courrier",
    )
    assert member.email is None and member.city == "Lyon 2e"
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "member.update")).one()
    assert json.loads(event.details)["changed"] == ["city", "email"]
    assert event.reason == "courrier"


def test_invalid_update_changes_nothing(session: Session) -> None:
    member = make_member(session)
    before = snapshot(session)
    with pytest.raises(FieldError, match="does not fit"):
        records.update_member(session, nir=member.nir, agent="alice", changes={"street": "x" * 39})
    session.rollback()
    assert snapshot(session) == before


def test_a_field_stored_before_todays_rules_is_named_as_stored(session: Session) -> None:
    """A name stored before invisible characters were refused: an e-mail change is refused
    naming the stored field, nothing is written, and correcting it in the same update works."""
    member = make_member(session)
    member.last_name = "MAR\u200bTIN"
    session.add(member)
    session.commit()
    before = snapshot(session)
    with pytest.raises(FieldError, match="stored last_name is refused") as refused:
        records.update_member(
            session, nir=member.nir, agent="alice", changes={"email": "c@example.org"}
        )
    assert refused.value.field == "last_name"
    session.rollback()
    assert snapshot(session) == before
    records.update_member(
        session,
        nir=member.nir,
        agent="alice",
        changes={"email": "c@example.org", "last_name": "Martin"},
    )
    assert (member.last_name, member.email) == ("Martin", "c@example.org")


def test_a_bad_new_value_is_not_blamed_on_the_stored_one(session: Session) -> None:
    member = make_member(session)
    with pytest.raises(FieldError) as refused:
        records.update_member(
            session, nir=member.nir, agent="alice", changes={"first_name": "Cl\u200baire"}
        )
    assert "stored" not in str(refused.value)


def test_close_keeps_data_and_is_idempotent(session: Session) -> None:
    member = make_member(session)
    records.close_member(session, nir=member.nir, reason="départ", agent="alice")
    records.close_member(session, nir=member.nir, reason="again", agent="alice")
    closed = records.get_member(session, member.nir)
    assert closed.status == "closed" and closed.last_name == "Martin"
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "member.close")).all()
    assert [(e.outcome, e.reason) for e in events] == [("ok", "départ"), ("noop", "again")]
    assert closed.closed_reason == "départ"


def test_unknown_member_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="no member with NIR 1 85"):
        records.get_member(session, make_nir())


def test_search_ignores_case_accents_and_nir_spacing(session: Session) -> None:
    helene = make_member(
        session, first_name="Hélène", last_name="Müller", city="Évreux", postcode="27000"
    )
    make_member(session, first_name="Paul", last_name="Durand", email="paul@example.org")
    found = views.list_members(session, search="HELENE muller")
    assert [m.nir for m in found] == [helene.nir]
    assert [m.nir for m in views.list_members(session, search="evreux")] == [helene.nir]
    spaced = format_nir(helene.nir)
    assert [m.nir for m in views.list_members(session, search=spaced)] == [helene.nir]
    assert views.list_members(session, search="100%") == []


def test_list_filters_by_status_locked_and_limit(session: Session) -> None:
    first = make_member(session, last_name="Aubert")
    second = make_member(session, last_name="Bernard")
    make_member(session, last_name="Caron")
    records.close_member(session, nir=second.nir, reason="r", agent="a")
    account = session.get(Account, first.id)
    assert account is not None
    from datetime import UTC, datetime

    account.hard_locked_at = datetime.now(UTC)
    session.commit()
    assert [m.last_name for m in views.list_members(session, status="closed")] == ["Bernard"]
    assert [m.last_name for m in views.list_members(session, locked=True)] == ["Aubert"]
    assert len(views.list_members(session, limit=2)) == 2


def test_member_view_matches_the_cli_contract(session: Session) -> None:
    member = make_member(session, birth_date="1985-05-03")
    view = views.member_view(session, member).as_json()
    assert set(view) >= {
        "nir",
        "civility",
        "last_name",
        "first_name",
        "email",
        "address",
        "status",
        "account",
        "pending_codes",
        "pending_letters",
    }
    assert set(view["account"]) == {
        "state",
        "pin_set",
        "failed_attempts",
        "locked_until",
        "captcha_required",
        "terms_accepted_version",
        "last_login_at",
    }
    assert view["account"]["state"] == "no_pin"
    assert view["address"]["lines"][0] == "Mme Hélène MARTIN"
    assert view["pending_letters"][0]["kind"] == "welcome"


def test_member_fields_round_trip_through_strings(session: Session) -> None:
    values = member_values(birth_date="1985-05-03", address_complement="Bâtiment B")
    member = make_member(session, **values)
    again = validate_member_fields(
        records.as_strings({name: getattr(member, name) for name in values})
    )
    assert again == validate_member_fields(values)


def test_closing_revokes_codes_and_cancels_queued_letters(session: Session) -> None:
    from cpms_admin.credentials.codes import store_code
    from cpms_admin.models import SecurityCode
    from cpms_admin.settings import Settings

    member = make_member(session)
    store_code(
        session,
        member_id=member.id,
        purpose="first_login",
        channel="email",
        code="123456",
        pepper=b"p",
        now=datetime.now(UTC),
        settings=Settings(),
    )
    session.commit()
    records.close_member(session, nir=member.nir, reason="décès", agent="alice")
    session.expire_all()
    statuses = {c.status for c in session.exec(select(SecurityCode))}
    letters = session.exec(select(Letter).where(Letter.member_id == member.id)).all()
    assert statuses == {"revoked"}
    assert [(letter.status, letter.status_reason) for letter in letters] == [
        ("cancelled", "member closed")
    ]


def test_settings_repr_hides_secrets() -> None:
    from cpms_admin.settings import Settings

    shown = repr(
        Settings(
            pepper="s3cr3t-pepper",
            smtp_url="smtp://u:hunter2@h:25",
            database_url="postgresql://u:dbpass@h/db",
        )
    )
    assert not any(secret in shown for secret in ("s3cr3t-pepper", "hunter2", "dbpass"))
