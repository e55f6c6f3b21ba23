"""Members as agents read them: `member list` (its filters, the search, the name order) and
`member show` (identity, account, the codes and letters waiting), and the same parts for a
member's dossier."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CompoundSelect, union_all
from sqlalchemy import select as core_select
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cpms_admin.clock import Clock, iso, system_clock
from cpms_admin.credentials.codes import live_at
from cpms_admin.credentials.lockout import account_state
from cpms_admin.db import Page, fetch_page, stated, unindexed
from cpms_admin.errors import InvalidInput
from cpms_admin.letters.claim import PendingLetter, as_waiting
from cpms_admin.members import undeliverable
from cpms_admin.members.postal import address_lines
from cpms_admin.members.search import count_matches, find_members, search_terms
from cpms_admin.models import Account, Letter, Member, SecurityCode, pk
from cpms_admin.vocabulary import AccountState, LetterStatus

_ACCOUNT = SQLModel.metadata.tables["account"]


def list_members(
    session: Session,
    *,
    status: str | None = None,
    locked: bool = False,
    search: str | None = None,
    limit: int | None = 50,
    clock: Clock = system_clock,
) -> Page:
    """Members in name order (`search.folded_columns`), at most `limit` (`None`: all); with
    `search`, those holding every word of it (`search.search_terms`)."""
    query = member_query(status=status, locked=locked, clock=clock)
    terms = search_terms(search or "")
    # A script's empty variable must not list everyone, nor `@` everyone with an e-mail.
    if search is not None and not any(char.isalnum() for term in terms for char in term):
        raise InvalidInput(
            f"--search {search!r} holds no letter or digit to look for: give a name, an "
            "e-mail, a city or a NIR"
        )
    if not terms:
        order = (col(Member.sort_name), col(Member.id))  # the ix_member_sort_name index's order
        return fetch_page(session, query.order_by(*order), limit)
    found = find_members(session, query, terms, limit=None if limit is None else limit + 1)
    if limit is None or len(found) <= limit:
        return Page(found, len(found))
    return Page(found[:limit], count_matches(session, query, terms))


def member_query(*, status: str | None, locked: bool, clock: Clock) -> SelectOfScalar[Member]:
    """`member list`'s filters other than the search. A pseudonymised member (purged after
    their retention period: privacy/pseudonymise.py) is no one any more, and never listed."""
    query = select(Member).where(col(Member.pseudonymised_at).is_(None))
    if status is not None:
        query = query.where(col(Member.status) == stated(status))  # 'closed': its own index
    if locked:
        query = query.where(col(Member.id).in_(locked_accounts(clock())))
    return query


def locked_accounts(now: datetime) -> CompoundSelect[int]:
    """The members whose account is hard-locked or cooling down at `now`, each kind read
    from its own partial index (migration 0012): a few thousand of a million accounts,
    found without reading the others. (A join testing `hard_locked_at IS NOT NULL OR
    locked_until > now` reads every account: no index serves an OR on two columns.)"""
    hard = core_select(_ACCOUNT.c.member_id).where(_ACCOUNT.c.hard_locked_at.is_not(None))
    cooling = core_select(_ACCOUNT.c.member_id).where(_ACCOUNT.c.locked_until > now)
    return union_all(hard, cooling)


def account_view(account: Account, now: datetime) -> dict[str, Any]:
    return {
        "state": account_state(account, now),
        "pin_set": account.pin_hash is not None,
        "failed_attempts": account.failed_attempts,
        "locked_until": iso(account.locked_until),
        "captcha_required": account.captcha_required,
        "terms_accepted_version": account.terms_accepted_version,
        "last_login_at": iso(account.last_login_at),
    }


def member_summary(member: Member) -> dict[str, Any]:
    """The identity and contact part of `member show --json` (also each `member list` item)."""
    return {
        "nir": member.nir,
        "civility": member.civility,
        "last_name": member.last_name,
        "first_name": member.first_name,
        "birth_date": member.birth_date.isoformat() if member.birth_date else None,
        "email": member.email,
        "address": {
            "lines": address_lines(member),
            "address_complement": member.address_complement,
            "address_building": member.address_building,
            "street": member.street,
            "locality": member.locality,
            "postcode": member.postcode,
            "city": member.city,
            "country": member.country,
            "envelope_name": member.envelope_name,
            "undeliverable": undeliverable.view(member),
        },
        "status": member.status,
    }


@dataclass(frozen=True)
class MemberView:
    """A member as `member show` sees them: identity, account, codes and letters waiting."""

    member: Member
    account: Account
    pending_codes: list[SecurityCode]
    pending_letters: list[PendingLetter]
    now: datetime

    @property
    def state(self) -> AccountState:
        return account_state(self.account, self.now)

    def as_json(self) -> dict[str, Any]:
        """What `member show --json` prints (docs/scripting.md)."""
        return {
            **member_summary(self.member),
            "account": account_view(self.account, self.now),
            "pending_codes": [
                {"purpose": c.purpose, "channel": c.channel, "expires_at": iso(c.expires_at)}
                for c in self.pending_codes
            ],
            "pending_letters": [waiting.as_json() for waiting in self.pending_letters],
        }


def member_views(
    session: Session, members: Sequence[Member], *, clock: Clock = system_clock
) -> list[MemberView]:
    """Several members as `member show` sees them, in six queries (three tell the letters the
    next print run will cancel)."""
    now = clock()
    ids = [pk(member) for member in members]
    accounts = {
        a.member_id: a for a in session.exec(select(Account).where(col(Account.member_id).in_(ids)))
    }
    codes: dict[int, list[SecurityCode]] = {member_id: [] for member_id in ids}
    for code in session.exec(
        select(SecurityCode)
        .where(
            col(SecurityCode.member_id).in_(ids),
            live_at(now, per_member=True),
        )
        .order_by(col(SecurityCode.id))
    ):
        codes[code.member_id].append(code)
    pending = session.exec(
        select(Letter)
        .where(col(Letter.member_id).in_(ids), unindexed(Letter.status) == LetterStatus.pending)
        .order_by(col(Letter.id))
    ).all()
    letters: dict[int, list[PendingLetter]] = {member_id: [] for member_id in ids}
    for waiting in as_waiting(session, pending, now=now):
        letters[waiting.letter.member_id].append(waiting)
    return [
        MemberView(member, accounts[pk(member)], codes[pk(member)], letters[pk(member)], now)
        for member in members
    ]


def member_view(session: Session, member: Member, *, clock: Clock = system_clock) -> MemberView:
    return member_views(session, [member], clock=clock)[0]
