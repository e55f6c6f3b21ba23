"""Storing the codes a letter batch printed, all at once when the batch commits: the same
rules as `codes.store_code` for each, in a few statements rather than three per letter."""

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from cpms_admin.credentials.code_hash import hash_code
from cpms_admin.credentials.codes import code_expiry, revoke_code, still_counts, store_code
from cpms_admin.models import SecurityCode, pk
from cpms_admin.pepper import Peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Channel, CodeStatus, Purpose, RevokeReason

IN_CHUNK = 500  # ids per IN (...) list: well under every engine's parameter limit


@dataclass(frozen=True)
class Printed:
    """A code printed in a letter, to be stored when its batch commits."""

    letter_id: int
    member_id: int
    purpose: str
    code: str = field(repr=False)
    requested_by: str | None = None


def store_printed_codes(
    session: Session,
    printed: list[Printed],
    *,
    pepper: bytes | Peppers,
    now: datetime,
    made_at: datetime,
    settings: Settings,
    void: Collection[int] = (),
) -> list[int]:
    """`store_code` for every code of a letter batch (made at `made_at`), in a few statements
    rather than three per letter: each member's older pending codes revoked, and a code
    stored revoked where the member was given a newer one since `made_at` that still counts,
    or where its letter is in `void` (letter ids). The ids of the letters, not void, whose
    code a newer one superseded. One code per member, as a batch prints one letter per member
    (several fall back to `store_code`, letter by letter)."""
    members = [p.member_id for p in printed]
    if len(set(members)) != len(members):
        return _store_one_by_one(
            session, printed, pepper=pepper, now=now, made_at=made_at, settings=settings, void=void
        )
    newer = _revoke_older(session, members, now=now, made_at=made_at)
    for p in printed:
        if p.purpose not in set(Purpose):
            raise ValueError(f"unknown code purpose {p.purpose!r}")
    expires = code_expiry(Channel.post, made_at, settings)
    rows = []
    for p in printed:
        revoked = (
            RevokeReason.address_changed
            if p.letter_id in void
            else RevokeReason.superseded
            if p.member_id in newer
            else None
        )
        rows.append(
            SecurityCode(
                member_id=p.member_id,
                purpose=p.purpose,
                channel=Channel.post,
                code_hash=hash_code(pepper=pepper, code=p.code),
                status=CodeStatus.revoked if revoked else CodeStatus.pending,
                revoked_reason=revoked,
                created_at=made_at,
                expires_at=expires,
                letter_id=p.letter_id,
                requested_by=p.requested_by,
            )
        )
    session.add_all(rows)
    session.flush()
    return [p.letter_id for p in printed if p.member_id in newer and p.letter_id not in void]


def _revoke_older(
    session: Session, members: list[int], *, now: datetime, made_at: datetime
) -> set[int]:
    """The members' codes pending since before `made_at` revoked; the members given a code
    since `made_at` that still counts, returned: theirs wins over the printed one."""
    newer: set[int] = set()
    for start in range(0, len(members), IN_CHUNK):
        chunk = members[start : start + IN_CHUNK]
        session.exec(
            update(SecurityCode)
            .where(
                col(SecurityCode.member_id).in_(chunk),
                col(SecurityCode.status) == CodeStatus.pending,
                col(SecurityCode.created_at) <= made_at,
            )
            .values(status=CodeStatus.revoked, revoked_reason=RevokeReason.superseded)
        )
        newer.update(
            session.exec(
                select(SecurityCode.member_id).where(
                    col(SecurityCode.member_id).in_(chunk),
                    col(SecurityCode.created_at) > made_at,
                    still_counts(now),
                )
            )
        )
    return newer


def _store_one_by_one(
    session: Session,
    printed: list[Printed],
    *,
    pepper: bytes | Peppers,
    now: datetime,
    made_at: datetime,
    settings: Settings,
    void: Collection[int],
) -> list[int]:
    """`store_printed_codes` letter by letter, for a batch with several letters a member."""
    superseded = []
    for p in printed:
        stored = store_code(
            session,
            member_id=p.member_id,
            purpose=p.purpose,
            channel=Channel.post,
            code=p.code,
            pepper=pepper,
            now=now,
            settings=settings,
            requested_by=p.requested_by,
            letter_id=p.letter_id,
            made_at=made_at,
        )
        if p.letter_id in void:
            revoke_code(session, code_id=pk(stored), reason=RevokeReason.address_changed)
        elif stored.status == CodeStatus.revoked:
            superseded.append(p.letter_id)
    return superseded
