"""The portal's flows through the Python API the portal imports, on every engine."""

from datetime import date

import pytest
from sqlmodel import Session

from cpms_admin.credentials import accounts
from cpms_admin.errors import InvalidInput
from cpms_admin.members import records, views
from cpms_admin.models import Member
from cpms_admin.portal import flows
from cpms_admin.settings import Settings
from tests.cred_helpers import (
    NEW_PIN,
    PIN,
    account_of,
    codes_of,
    email_code,
    give_pin,
    login,
    outbox,
    set_pin,
    text_of,
)
from tests.factories import make_member, make_nir, snapshot
from tests.harness import FakeClock

WRONG = "605813"


@pytest.fixture
def member(session: Session, settings: Settings) -> Member:
    member = make_member(session, welcome=False, birth_date="1985-05-14")
    give_pin(session, settings, member)
    return member


def test_right_pin_logs_in_and_records_the_login(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    result = login(session, settings, clock, member.nir, PIN)
    assert (result.ok, result.reason, result.remaining_attempts) == (True, "ok", None)
    assert account_of(session, member).last_login_at == clock.now


def test_three_failures_then_a_cooldown_and_the_captcha(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    first = login(session, settings, clock, member.nir, WRONG)
    assert first.message == (
        "Mot de passe erroné. Attention, il vous reste 2 tentatives avant de devoir patienter "
        "1 minute."
    )
    assert (first.reason, first.remaining_attempts, first.captcha_required) == (
        "wrong_pin",
        2,
        False,
    )
    login(session, settings, clock, member.nir, WRONG)
    third = login(session, settings, clock, member.nir, WRONG)
    assert (third.retry_after_seconds, third.captcha_required) == (60, True)
    assert "vous devez patienter 1 minute" in third.message
    # During the wait even the right PIN is refused, and the refusal is not counted.
    waiting = login(session, settings, clock, member.nir, PIN, captcha=True)
    assert (waiting.reason, waiting.retry_after_seconds) == ("cooldown", 60)
    assert account_of(session, member).failed_attempts == 3
    clock.advance(seconds=61)
    no_captcha = login(session, settings, clock, member.nir, PIN)
    assert (no_captcha.ok, no_captcha.reason, no_captcha.captcha_required) == (
        False,
        "captcha_required",
        True,
    )
    assert login(session, settings, clock, member.nir, PIN, captcha=True).ok
    account = account_of(session, member)
    assert (account.failed_attempts, account.locked_until, account.captcha_required) == (
        0,
        None,
        False,
    )


def test_an_attempt_begun_as_another_locked_the_account_is_told_the_cool_down(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    """In a burst of guesses, an attempt reads its time, then another locks the account a
    moment later: its wait is the cool-down's 60 s, not 61 ("2 minutes")."""
    for _ in range(3):
        login(session, settings, clock, member.nir, WRONG)
    clock.advance(seconds=-0.2)  # this attempt's time was read just before the third failure
    late = login(session, settings, clock, member.nir, WRONG, captcha=True)
    assert (late.reason, late.retry_after_seconds) == ("cooldown", 60)
    assert "vous devez patienter 1 minute" in late.message


def test_waits_double_then_the_tenth_failure_locks_until_an_agent_unlocks(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    waits = []
    for _ in range(10):
        result = login(session, settings, clock, member.nir, WRONG, captcha=True)
        assert result.reason == "wrong_pin"
        waits.append(result.retry_after_seconds)
        clock.advance(seconds=result.retry_after_seconds or 0)
    assert waits == [None, None, 60, 120, 240, 480, 960, 1920, 3600, None]
    assert result.remaining_attempts == 0
    assert "Votre accès est bloqué" in result.message
    clock.advance(days=30)
    locked = login(session, settings, clock, member.nir, PIN, captcha=True)
    assert (locked.ok, locked.reason, locked.remaining_attempts) == (False, "locked", 0)
    accounts.unlock_account(session, nir=member.nir, agent="a", reason="phoned", clock=clock)
    assert login(session, settings, clock, member.nir, PIN).ok


def _portal_view(result: flows.PortalResult) -> tuple[object, ...]:
    """What the portal shows: everything but the internal reason."""
    return (
        result.ok,
        result.message,
        result.remaining_attempts,
        result.retry_after_seconds,
        result.captcha_required,
    )


def test_unknown_nir_and_member_without_pin_look_like_a_wrong_pin(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    no_pin = make_member(session, welcome=False)
    unknown = make_nir()
    steps = [(WRONG, False, 0)] * 3 + [(WRONG, True, 0), (WRONG, False, 61), (WRONG, True, 0)]
    for pin, captcha, wait in steps:
        clock.advance(seconds=wait)
        seen = {
            nir: login(session, settings, clock, nir, pin, captcha=captcha)
            for nir in (member.nir, no_pin.nir, unknown)
        }
        assert len({_portal_view(result) for result in seen.values()}) == 1, seen
        reasons = [result.reason for result in seen.values()]
        assert reasons[2] == "unknown_member"
        assert reasons[1] in ("no_pin", "cooldown", "captcha_required")


def test_a_closed_member_cannot_log_in(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    records.close_member(session, nir=member.nir, reason="left", agent="a", clock=clock)
    result = login(session, settings, clock, member.nir, PIN)
    assert (result.ok, result.reason) == (False, "closed")
    assert "n'est plus accessible" in result.message


@pytest.mark.parametrize("pin", ["48291", "4829150", "４８２９１５", "48 915", ""])
def test_a_malformed_pin_is_refused_without_costing_an_attempt(
    session: Session, settings: Settings, clock: FakeClock, member: Member, pin: str
) -> None:
    before = snapshot(session)
    with pytest.raises(InvalidInput, match="6 digits"):
        login(session, settings, clock, member.nir, pin)
    assert snapshot(session) == before


def test_legacy_hash_is_replaced_by_argon2id_at_first_login(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    import bcrypt

    account = account_of(session, member)
    account.pin_hash = "legacy:" + bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(4)).decode()
    session.commit()
    assert login(session, settings, clock, member.nir, PIN).ok
    assert account_of(session, member).pin_hash.startswith("$argon2id$")  # type: ignore[union-attr]
    assert login(session, settings, clock, member.nir, PIN).ok


def test_raised_argon2_cost_rehashes_at_login(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    from dataclasses import replace

    stronger = replace(settings, argon2_time_cost=3)
    assert login(session, stronger, clock, member.nir, PIN).ok
    assert ",t=3," in (account_of(session, member).pin_hash or "")
    assert login(session, settings, clock, member.nir, PIN).ok


def test_first_login_by_code_then_terms(
    session: Session, settings: Settings, clock: FakeClock
) -> None:
    newcomer = make_member(session, welcome=False)
    request = flows.request_code(session, nir=newcomer.nir, settings=settings, clock=clock)
    assert (request.answer.ok, request.answer.reason) == (True, "ok")
    assert "un e-mail contenant votre code de sécurité vous a été envoyé" in request.answer.message
    assert outbox(settings) == []  # the e-mail leaves once the answer was given
    request.send()
    code = [m for m in outbox(settings) if "première connexion" in m["Subject"]]
    assert len(code) == 1
    assert "Si vous n'avez pas demandé ce code, ignorez" in text_of(code[0])  # asked on the portal
    secret = text_of(code[0]).split("Votre code de sécurité : ")[1][:6]
    done = set_pin(session, settings, clock, newcomer.nir, secret)
    assert (done.ok, done.message) == (
        True,
        "Votre modification a été prise en compte. "
        "Vous pouvez vous connecter avec votre nouveau mot de passe.",
    )
    assert "a été créé" in outbox(settings)[-1]["Subject"]
    assert login(session, settings, clock, newcomer.nir, NEW_PIN).ok
    again = set_pin(session, settings, clock, newcomer.nir, secret, "573920", using="code")
    assert (again.ok, again.reason) == (False, "code_used")  # single use; said, not counted
    assert account_of(session, newcomer).failed_attempts == 0
    accepted = flows.accept_terms(
        session, nir=newcomer.nir, pin=NEW_PIN, settings=settings, clock=clock
    )
    assert accepted.ok
    assert account_of(session, newcomer).terms_accepted_version == settings.terms_version
    with pytest.raises(InvalidInput, match="current Terms of Use version"):
        flows.accept_terms(
            session, nir=newcomer.nir, pin=NEW_PIN, version="1999-01", settings=settings,
            clock=clock,
        )  # fmt: skip


def test_mismatch_and_weak_pins_keep_the_code_alive(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    code = email_code(session, settings, clock, member)
    mismatch = set_pin(session, settings, clock, member.nir, code, NEW_PIN, "739265")
    assert (mismatch.reason, mismatch.message) == (
        "mismatch",
        "Les deux mots de passe saisis ne sont pas identiques. Veuillez les saisir à nouveau.",
    )
    for weak, why in [("111111", "un seul chiffre répété"), ("140585", "de naissance")]:
        refused = set_pin(session, settings, clock, member.nir, code, weak)
        assert refused.reason == "weak_pin" and why in refused.message
    (row,) = codes_of(session, member)
    assert (row.status, row.failed_tries) == ("pending", 0)
    assert set_pin(session, settings, clock, member.nir, code).ok
    assert codes_of(session, member)[0].status == "used"


def test_a_pin_from_the_nir_is_refused_before_anything_is_spent(
    session: Session, settings: Settings, clock: FakeClock
) -> None:
    """The NIR gives the birth year and month: 14 May 1985, May 1985 and the like are
    refused even with no birth date on file, and the refusal spends neither the code nor the
    account's budget (whoever asks typed the NIR, so it tells them nothing)."""
    member = make_member(session, welcome=False, nir=make_nir(year=85, month=5))
    code = email_code(session, settings, clock, member)
    for guessable in ("140585", "850514", "051985", "198505"):
        refused = set_pin(session, settings, clock, member.nir, code, guessable)
        assert (refused.reason, refused.message) == (
            "weak_pin",
            "Ce mot de passe est trop facile à deviner (votre année et votre mois de "
            "naissance). Choisissez-en un autre.",
        )
    (row,) = codes_of(session, member)
    assert (row.status, row.failed_tries, account_of(session, member).failed_attempts) == (
        "pending",
        0,
        0,
    )
    assert set_pin(session, settings, clock, member.nir, code, "140685").ok


def test_five_wrong_codes_kill_it(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    code = email_code(session, settings, clock, member)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    refused = []
    for _ in range(5):
        refused.append(set_pin(session, settings, clock, member.nir, wrong, captcha_ok=True))
        clock.advance(minutes=2)  # past the cool-downs, within the code's 10 minutes
    assert [(r.reason, r.remaining_attempts) for r in refused] == [
        ("wrong_code", left) for left in (2, 1, 7, 6, 5)
    ]
    assert (codes_of(session, member)[0].failed_tries, codes_of(session, member)[0].status) == (
        5,
        "revoked",
    )
    clock.advance(minutes=5)
    late = set_pin(session, settings, clock, member.nir, code, using="code", captcha_ok=True)
    assert (late.ok, late.reason, late.remaining_attempts) == (False, "dead_code", 4)
    unknown = set_pin(session, settings, clock, make_nir(), wrong, using="code")
    assert (unknown.reason, unknown.remaining_attempts) == ("unknown_member", 2)
    assert unknown.message == (
        "Code de sécurité erroné ou expiré. Attention, il vous reste 2 tentatives avant de "
        "devoir patienter 1 minute."
    )


def test_codes_expire_and_a_new_one_revokes_the_old(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    old = email_code(session, settings, clock, member)
    new = email_code(session, settings, clock, member)
    assert [c.status for c in codes_of(session, member)] == ["revoked", "pending"]
    # The old code is checked against the new one: it is just a wrong code now.
    assert set_pin(session, settings, clock, member.nir, old, using="code").reason == "wrong_code"
    clock.advance(minutes=10, seconds=1)
    assert set_pin(session, settings, clock, member.nir, new, using="code").reason == "dead_code"


def test_setting_a_pin_with_a_code_lifts_the_hard_lock(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    for _ in range(10):
        clock.advance(hours=2)
        login(session, settings, clock, member.nir, WRONG, captcha=True)
    assert account_of(session, member).hard_locked_at is not None
    # The portal sends no code while the lock holds; an agent steps in and sends one.
    asked = flows.request_code(session, nir=member.nir, settings=settings, clock=clock)
    assert asked.answer.reason == "rate_limited"
    code = email_code(session, settings, clock, member)
    assert set_pin(session, settings, clock, member.nir, code, captcha_ok=True).ok
    account = account_of(session, member)
    assert (account.hard_locked_at, account.failed_attempts, account.captcha_required) == (
        None,
        0,
        False,
    )
    assert login(session, settings, clock, member.nir, NEW_PIN).ok
    assert "a été réinitialisé" in outbox(settings)[-1]["Subject"]


def test_change_pin_with_the_current_pin(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    wrong = set_pin(session, settings, clock, member.nir, WRONG)
    assert (wrong.reason, wrong.remaining_attempts) == ("wrong_pin", 2)
    assert set_pin(session, settings, clock, member.nir, PIN).ok
    assert login(session, settings, clock, member.nir, NEW_PIN).ok
    assert login(session, settings, clock, member.nir, PIN).reason == "wrong_pin"
    assert "a été modifié" in outbox(settings)[-1]["Subject"]


def test_request_code_without_email_queues_one_letter_and_unknown_gets_the_same_answer(
    session: Session, settings: Settings, clock: FakeClock
) -> None:
    no_email = make_member(session, welcome=False, email=None)
    answers = []
    for nir in (no_email.nir, no_email.nir, make_nir()):
        asked = flows.request_code(session, nir=nir, settings=settings, clock=clock)
        asked.send()
        answers.append(asked.answer)
    assert len({(a.ok, a.message) for a in answers}) == 1
    assert "un courrier postal contenant votre code de sécurité va vous" in answers[0].message
    assert [a.reason for a in answers] == ["ok", "ok", "unknown_member"]  # one letter, reused
    pending = views.member_view(session, no_email, clock=clock).as_json()["pending_letters"]
    assert [letter["kind"] for letter in pending] == ["security_code"]
    assert outbox(settings) == []


def test_birth_date_pin_refused_for_a_change_too(
    session: Session, settings: Settings, clock: FakeClock, member: Member
) -> None:
    assert member.birth_date == date(1985, 5, 14)
    result = set_pin(session, settings, clock, member.nir, PIN, "140585")
    assert result.reason == "weak_pin"
    assert login(session, settings, clock, member.nir, PIN).ok


def test_every_evaluated_attempt_does_the_same_argon2_work(
    session: Session,
    settings: Settings,
    clock: FakeClock,
    member: Member,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing: an unknown NIR or a member without PIN costs one argon2 verification, like a
    wrong PIN; a refused-before-checking attempt costs none, whoever it is."""
    from argon2 import PasswordHasher

    login(session, settings, clock, member.nir, PIN)  # warm the cached hasher up
    calls: list[int] = []
    real_verify = PasswordHasher.verify

    def counting(self: PasswordHasher, stored: str | bytes, secret: str | bytes) -> bool:
        calls.append(1)
        return real_verify(self, stored, secret)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    no_pin = make_member(session, welcome=False)
    for nir in (member.nir, no_pin.nir, make_nir()):
        for expected in (1, 1, 1, 0):  # the 4th comes during the cool-down
            calls.clear()
            login(session, settings, clock, nir, WRONG, captcha=True)
            assert len(calls) == expected, nir
