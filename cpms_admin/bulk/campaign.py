"""`code campaign`: queue a security code for every selected member, by the right channel.

Nothing secret is made here: a letter gets its code when the nightly batch prints it, an
e-mail when `mail send` sends it. Members are read in batches of ids; each batch's letters
and e-mails go in with bulk inserts and one commit, with an audit event for each member
given a letter or an e-mail; the run's own event comes with the first batch, its closing
event (the counts) at the end. A member who already has a letter or an e-mail waiting is
left alone, so a campaign killed half-way (or run twice) queues nothing twice.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlmodel import Session, SQLModel, col

from cpms_admin.audit import RunAudit
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials.codes import purpose_for
from cpms_admin.credentials.on_its_way import code_on_its_way, letter_on_its_way, mail_on_its_way
from cpms_admin.db import CAMPAIGN_RUN, insert_per_member, one_run, transaction
from cpms_admin.errors import FieldError, InvalidInput
from cpms_admin.members.nir import nir_to_find
from cpms_admin.models import Letter, OutgoingMail, SecurityCode
from cpms_admin.private_files import refuse_reserved_source
from cpms_admin.vocabulary import (
    AuditAction,
    CampaignWording,
    Channel,
    ChannelChoice,
    LetterKind,
    LetterStatus,
    MailStatus,
    MemberStatus,
)

BATCH_SIZE = 2000
_MEMBER, _ACCOUNT = SQLModel.metadata.tables["member"], SQLModel.metadata.tables["account"]
_LETTER, _MAIL = SQLModel.metadata.tables["letter"], SQLModel.metadata.tables["outgoing_mail"]


@dataclass(frozen=True)
class Selection:
    """Who gets a code; every criterion given must hold (closed members never do)."""

    never_logged_in: bool = False
    no_pin: bool = False
    nirs: Sequence[str] | None = None  # compact NIRs, from --from-file
    imported_since: datetime | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "never_logged_in": self.never_logged_in,
            "no_pin": self.no_pin,
            "from_file": None if self.nirs is None else len(self.nirs),
            "imported_since": self.imported_since,
        }


@dataclass
class CampaignCounts:
    """`letters + emails` were queued (or, dry, would be); the rest say who was left out."""

    selected: int = 0
    letters: int = 0
    emails: int = 0
    already_pending: int = 0  # a letter, an e-mail or a live code is already on its way
    no_email: int = 0  # --channel email, but no address known
    undeliverable: int = 0  # by post, but a letter came back from the address (NPAI)
    closed: int = 0
    unknown: int = 0  # NIRs of --from-file with no member
    dry_run: bool = False  # counted only: nothing was queued

    def as_dict(self) -> dict[str, int]:
        """The counts, as the run's audit event keeps them."""
        return {name: value for name, value in asdict(self).items() if name != "dry_run"}

    def as_json(self) -> dict[str, int | bool]:
        """What `code campaign --json` prints."""
        return {**self.as_dict(), "dry_run": self.dry_run}


def read_nir_file(path: Path) -> list[str]:
    """One NIR per line (separators allowed); blank lines, `#` comments and a `nir` header
    are skipped, repeats dropped. Any bad line refuses the whole file (exit 2)."""
    refuse_reserved_source(path, "a NIR list")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInput(f"{path}: cannot read the NIR list ({reason})") from None
    nirs: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip().strip(",;").strip()
        if not value or value.startswith("#") or (number == 1 and value.lower() == "nir"):
            continue
        try:
            nirs[nir_to_find(value)] = None
        except FieldError as exc:
            raise InvalidInput(f"{path}: line {number}: {exc}") from None
    return list(nirs)


def _query(
    selection: Selection, now: datetime, *, window: tuple[int, int] | None = None
) -> Select[Any]:
    """The selected members, with whether a code is on its way to each. `window` (first
    id excluded, last included) bounds every table the query reads to a batch's members:
    PostgreSQL otherwise hashed every pending letter for each batch, and merged the whole
    account table up to the batch (a million-member campaign took minutes, growing with
    the square of its size)."""
    # A letter waiting or being printed, an e-mail waiting, or a live code (say in a letter
    # printed last week): the member has a way in, and a new code would revoke that one.
    member = _MEMBER.c.id
    ways = [
        (letter_on_its_way(member), Letter.member_id),
        (mail_on_its_way(member), OutgoingMail.member_id),
        (code_on_its_way(member, now=now), SecurityCode.member_id),
    ]
    if window is not None:
        after, last = window
        ways = [(way.where(col(key) > after, col(key) <= last), key) for way, key in ways]
    pending = or_(*(way for way, _ in ways))
    query = (
        select(
            _MEMBER.c.id,
            _MEMBER.c.email,
            _MEMBER.c.status,
            _MEMBER.c.undeliverable_at,
            pending.label("pending"),
            *_ACCOUNT.c,
        )
        .join_from(_MEMBER, _ACCOUNT, _ACCOUNT.c.member_id == _MEMBER.c.id)
        .order_by(_MEMBER.c.id)
    )
    if selection.never_logged_in:
        query = query.where(_ACCOUNT.c.last_login_at.is_(None))
    if selection.no_pin:
        query = query.where(_ACCOUNT.c.pin_hash.is_(None))
    if selection.imported_since is not None:
        query = query.where(_MEMBER.c.imported_at >= selection.imported_since)
    if window is not None:
        after, last = window
        query = query.where(member > after, member <= last)
        query = query.where(_ACCOUNT.c.member_id > after, _ACCOUNT.c.member_id <= last)
    return query


def _batches(
    session: Session, selection: Selection, counts: CampaignCounts, size: int, now: datetime
) -> Iterator[list[Any]]:
    """The selected members, a batch at a time: by id, or by chunks of the NIR list."""
    query = _query(selection, now)
    if selection.nirs is not None:
        for at in range(0, len(selection.nirs), size):
            chunk = selection.nirs[at : at + size]
            rows = list(session.execute(query.where(_MEMBER.c.nir.in_(chunk))))
            members = session.execute(select(func.count()).where(_MEMBER.c.nir.in_(chunk)))
            counts.unknown += len(chunk) - members.scalar_one()  # not those the criteria left out
            yield rows
        return
    # Windows of `size` members by id (members added meanwhile included), each read with
    # every table bounded to it (`_query`).
    last = 0
    while True:
        ids = select(_MEMBER.c.id).where(_MEMBER.c.id > last).order_by(_MEMBER.c.id).limit(size)
        upto = session.execute(select(func.max(ids.subquery().c.id))).scalar()
        if upto is None:
            return
        rows = list(session.execute(_query(selection, now, window=(last, upto))))
        last = upto
        if rows:
            yield rows


# The ids of the members a batch queues a code for, by how it goes and the code's purpose: one
# bulk insert each.
Queued = dict[tuple[Channel, str], list[int]]
# What each member's audit event says was queued for them.
_QUEUED = {Channel.email: "email", Channel.post: "letter"}


def _sort(rows: list[Any], *, channel: str, counts: CampaignCounts) -> Queued:
    """Who gets what in a batch of selected members, counted."""
    queued: Queued = {}
    for row in rows:
        counts.selected += 1
        if row.status != MemberStatus.active:
            counts.closed += 1
        elif row.pending:
            counts.already_pending += 1
        elif channel == ChannelChoice.email and not row.email:
            counts.no_email += 1
        elif row.undeliverable_at is not None and (channel == ChannelChoice.post or not row.email):
            counts.undeliverable += 1
        else:
            way = Channel.email if channel != ChannelChoice.post and row.email else Channel.post
            # purpose_for: the rule of a single `code issue`
            queued.setdefault((way, purpose_for(row)), []).append(row.id)
    counts.letters += sum(len(ids) for (way, _), ids in queued.items() if way == Channel.post)
    counts.emails += sum(len(ids) for (way, _), ids in queued.items() if way == Channel.email)
    return queued


def _queue(
    session: Session,
    queued: Queued,
    *,
    now: datetime,
    wording: CampaignWording,
    run_audit: RunAudit,
) -> None:
    """One batch in one transaction: its letters and e-mails, and an audit event for each
    member given a letter or an e-mail (and the run's own event, with the first batch)."""
    with transaction(session):
        run_audit.start(session)
        for (way, purpose), member_ids in queued.items():
            if way == Channel.email:
                table, extra = _MAIL, {"status": MailStatus.pending, "attempts": 0}
            else:
                table, extra = _LETTER, {"status": LetterStatus.pending, "wording": wording}
            values = {"kind": LetterKind.security_code, "created_at": now, **extra}
            insert_per_member(session, table, member_ids, {**values, "purpose": purpose})
            run_audit.record_members(session, member_ids, change=_QUEUED[way])


def run_campaign(
    session: Session,
    *,
    selection: Selection,
    channel: str,
    reason: str | None,
    agent: str,
    dry_run: bool = False,
    wording: CampaignWording = CampaignWording.first_access,
    on_progress: Callable[[CampaignCounts], None] = lambda counts: None,
    clock: Clock = system_clock,
    batch_size: int = BATCH_SIZE,
) -> CampaignCounts:
    """Queue (or, dry, count) a code letter or e-mail for each selected member."""
    if not any(
        (
            selection.never_logged_in,
            selection.no_pin,
            selection.nirs is not None,
            selection.imported_since is not None,
        )
    ):
        raise InvalidInput(
            "select members: give --never-logged-in, --no-pin, --from-file "
            "or --imported-since (several narrow the selection)"
        )
    if channel not in set(ChannelChoice):
        raise InvalidInput(f"--channel must be auto, email or post, got {channel!r}")
    if not dry_run and (reason is None or not reason.strip()):
        raise InvalidInput("a reason is required for a campaign (recorded in the audit log)")
    now = clock()
    counts = CampaignCounts(dry_run=dry_run)
    run_audit = RunAudit(
        agent=agent,
        action=AuditAction.code_campaign,
        at=now,
        reason=reason.strip() if reason else None,
        channel=channel,
        wording=wording,
        **selection.describe(),
    )
    # One campaign queues at a time: on PostgreSQL two would each see the other's members
    # as having nothing on its way, and queue them twice.
    with nullcontext() if dry_run else one_run(session, CAMPAIGN_RUN):
        for rows in _batches(session, selection, counts, batch_size, now):
            queued = _sort(rows, channel=channel, counts=counts)
            if dry_run:
                session.rollback()
            else:
                _queue(session, queued, now=now, wording=wording, run_audit=run_audit)
            on_progress(counts)
        if not dry_run:
            with transaction(session):
                run_audit.finish(session, counts=counts.as_dict(), outcome="ok", at=clock())
    return counts
