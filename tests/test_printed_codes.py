"""The codes a letter batch printed, stored at its commit in a few statements: the same
result, member by member, as `store_code` for each letter."""

from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from cpms_admin.credentials import codes
from cpms_admin.credentials.printed import Printed, store_printed_codes
from cpms_admin.letters.queue import queue_letter
from cpms_admin.models import Member, SecurityCode, pk
from cpms_admin.settings import Settings
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, FakeClock

PEPPER = TEST_PEPPER.encode()


def _issue(session: Session, settings: Settings, member: Member, at: datetime) -> int:
    issued = codes.issue_code(
        session,
        member_id=pk(member),
        purpose="first_login",
        channel="email",
        pepper=PEPPER,
        now=at,
        settings=settings,
    )
    return pk(issued.row)


def _state(session: Session) -> list[tuple[int, str, str, int | None]]:
    session.flush()
    rows = session.exec(select(SecurityCode).order_by(SecurityCode.member_id, SecurityCode.id))
    return [(r.member_id, r.status, r.channel, r.letter_id) for r in rows]


@pytest.mark.parametrize("together", [True, False])
def test_older_codes_revoked_and_a_newer_one_wins(
    session: Session, settings: Settings, clock: FakeClock, together: bool
) -> None:
    made_at = clock.now
    older, newer, quiet = (make_member(session, nir=make_nir(), welcome=False) for _ in range(3))
    _issue(session, settings, older, made_at - timedelta(hours=1))  # revoked by the letter
    _issue(session, settings, newer, made_at + timedelta(minutes=5))  # wins over the letter
    letters = [
        queue_letter(session, member=m, kind="security_code", now=clock())
        for m in (older, newer, quiet)
    ]
    printed = [
        Printed(pk(letter), letter.member_id, "first_login", f"{n:06d}")
        for n, letter in enumerate(letters, start=1)
    ]
    now = made_at + timedelta(minutes=10)
    if together:
        superseded = store_printed_codes(
            session, printed, pepper=PEPPER, now=now, made_at=made_at, settings=settings
        )
    else:  # the rule as one letter at a time: what the batch does for one member twice
        superseded = [
            p.letter_id
            for p in printed
            if codes.store_code(
                session,
                member_id=p.member_id,
                purpose=p.purpose,
                channel="post",
                code=p.code,
                pepper=PEPPER,
                now=now,
                settings=settings,
                letter_id=p.letter_id,
                made_at=made_at,
            ).status
            == "revoked"
        ]
    assert superseded == [pk(letters[1])]
    assert _state(session) == [
        (pk(older), "revoked", "email", None),
        (pk(older), "pending", "post", pk(letters[0])),
        (pk(newer), "pending", "email", None),
        (pk(newer), "revoked", "post", pk(letters[1])),
        (pk(quiet), "pending", "post", pk(letters[2])),
    ]


def test_two_codes_for_one_member_are_stored_one_after_the_other(
    session: Session, settings: Settings, clock: FakeClock
) -> None:
    member = make_member(session, nir=make_nir(), welcome=False)
    letters = [
        queue_letter(session, member=member, kind="security_code", now=clock()) for _ in range(2)
    ]
    printed = [
        Printed(pk(le), pk(member), "first_login", f"{n}23456") for n, le in enumerate(letters, 1)
    ]
    store_printed_codes(
        session, printed, pepper=PEPPER, now=clock.now, made_at=clock.now, settings=settings
    )
    assert [status for _, status, _, _ in _state(session)] == ["revoked", "pending"]
