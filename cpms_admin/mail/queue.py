"""`mail send`: deliver the queued campaign e-mails, each with a code made at send time.

One run at a time (`db.one_run`: a second one started meanwhile, by cron when the server is
slow, exits 4): an e-mail claimed and not marked sent is then one a killed run left. For
each e-mail: claim it (one more attempt, compare-and-set), read the member's address (the row
locked on PostgreSQL), store the new code's hash and commit, then send to that address. An
address changed meanwhile either waits for that commit and revokes the code, or is the one
read. Sent: marked sent.
Failed: the code that never arrived is revoked and the e-mail waits for the next run,
until MAX_ATTEMPTS (an address the mail library refuses is given up at once). After
STOP_AFTER failures in a row, or one session past its deadline, the server is taken to be
down and the run stops, leaving the rest untouched for the next run. An e-mail sent,
cancelled or given up gets an audit event for its member in the transaction that says so,
beside the run's own event and its closing event (see audit.RunAudit).

An e-mail no longer needed is cancelled, not sent: the member was closed or lost their
address, or already has a code on its way (`on_its_way`: a live code, say from a letter
printed since the campaign, or a letter waiting to be printed), which a new code would
revoke. The e-mail's own code does not count: a run killed between storing it and marking
the e-mail sent cannot know whether it left, so the next run sends the e-mail again with a
new code that revokes it. The member may get two e-mails; only the last code works.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, SQLModel, col, select

from cpms_admin.audit import RunAudit
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials import codes
from cpms_admin.credentials.delivery import email_code, issue_email_code
from cpms_admin.credentials.on_its_way import on_its_way
from cpms_admin.db import MAIL_RUN, one_run, transaction
from cpms_admin.english import agree, count
from cpms_admin.errors import BadAddress, CodeSuperseded, MailError, MailTimeout, Refused
from cpms_admin.faults import failpoint
from cpms_admin.mail.transport import Transport
from cpms_admin.models import Account, Member, OutgoingMail, pk
from cpms_admin.pepper import load_peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    AuditAction,
    CancelReason,
    CodeStatus,
    MailStatus,
    MemberStatus,
    RevokeReason,
)

MAX_ATTEMPTS = 5
NO_EMAIL = "no e-mail address"  # why a queued e-mail is cancelled, besides on_its_way's
SENT_BEFORE_A_STOP = "sent by a run stopped before it could record it: the member used its code"
STOP_AFTER = 5
BATCH_SIZE = 100


@dataclass
class MailCounts:
    sent: int = 0
    retry: int = 0  # failed this time, tried again by the next run
    failed: int = 0  # given up: MAX_ATTEMPTS failures, or an address that cannot be used
    cancelled: int = 0  # no longer needed (see the module docstring)
    left: int = 0  # still pending after this run (limit reached or server down)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class MailRun:
    counts: MailCounts
    stopped: str | None = None  # why the run stopped early (server down)

    def as_json(self) -> dict[str, Any]:
        """`mail send --json`: the counts, and why the run stopped early if it did."""
        return {**self.counts.as_dict(), "stopped": self.stopped}


def _claim(session: Session, mail: OutgoingMail) -> bool:
    """Count one more attempt, only if no other run did since the row was read."""
    table = SQLModel.metadata.tables["outgoing_mail"]  # Core: the ORM object is set by hand
    claimed = session.execute(
        update(table)
        .where(
            table.c.id == pk(mail),
            table.c.status == MailStatus.pending,
            table.c.attempts == mail.attempts,
        )
        .values(attempts=table.c.attempts + 1)
        .returning(table.c.id)
    ).first()
    if claimed is not None:
        mail.attempts += 1
    return claimed is not None


def _give_up(mail: OutgoingMail, reason: str) -> None:
    mail.status, mail.last_error = MailStatus.failed, reason


def _cannot_be_mailed(member: Member) -> str | None:
    """Why the member can no longer get an e-mail at all: closed, or no address."""
    if member.status != MemberStatus.active:
        return CancelReason.member_closed.text
    return None if member.email else NO_EMAIL


def _no_longer_needed(
    session: Session, mail: OutgoingMail, member: Member, now: datetime
) -> str | None:
    if unreachable := _cannot_be_mailed(member):
        return unreachable
    # This e-mail's own code, made by a run killed before it could mark the e-mail sent, may
    # never have left: it is no reason to cancel, and the code sent now replaces it.
    if waiting := on_its_way(session, member_id=pk(member), now=now, except_code_id=mail.code_id):
        return waiting
    own = mail.code_id  # used: a run stopped after sending it, and it arrived
    if own is not None and codes.status_of(session, code_id=own) == CodeStatus.used:
        return SENT_BEFORE_A_STOP
    # A code the member got since, used (a PIN set with it) or live: as for a queued letter.
    since = codes.code_since(
        session, member_id=pk(member), since=mail.created_at, now=now, but=mail.code_id
    )
    return CancelReason.newer_code.text if since else None


class _Sender:
    def __init__(
        self,
        session: Session,
        *,
        agent: str,
        settings: Settings,
        transport: Transport,
        clock: Clock,
        audit: RunAudit,
    ) -> None:
        self.session, self.agent, self.settings, self.clock = session, agent, settings, clock
        self.transport, self.audit = transport, audit
        self.pepper = load_peppers(settings)
        self.counts = MailCounts()
        self.failures_in_a_row = 0
        self.stop: str | None = None  # why the run must stop: the server looks down

    def cancel(self, mail: OutgoingMail, reason: str, at: datetime) -> None:
        """Cancel `mail`, no longer needed, in the unit of work open, if any (see `save`)."""
        mail.status, mail.last_error = MailStatus.cancelled, reason
        self.counts.cancelled += 1
        self.save(mail, at)

    def save(self, mail: OutgoingMail, at: datetime) -> None:
        """Write `mail` in one unit of work (the run's event with the first); an e-mail sent,
        cancelled or given up, with an event for its member."""
        with transaction(self.session):
            self.session.add(mail)
            self.audit.start(self.session)
            if mail.status != MailStatus.pending:
                self.audit.record_members(self.session, [mail.member_id], change=mail.status, at=at)

    def send(self, mail: OutgoingMail, member: Member, account: Account) -> None:
        now: datetime = self.clock()
        with transaction(self.session):  # a first look, so a moot e-mail is not claimed
            # Read a moment ago with its batch: the member may have left or changed address since.
            self.session.refresh(member)
            self.session.refresh(account)
            moot = _no_longer_needed(self.session, mail, member, now)
            if moot is not None:
                self.cancel(mail, moot, now)
                return
        failpoint("mail.before_claim")
        issued = self._claim_with_code(mail, member, account, now)
        if issued is None:
            return  # another run has it, or the member left or lost their address meanwhile
        failpoint("mail.before_send")
        try:
            email_code(
                self.session,
                member=member,
                issued=issued,
                agent=self.agent,
                settings=self.settings,
                clock=self.clock,
                transport=self.transport,
            )
        except CodeSuperseded:  # a newer code reached the member while this one waited
            self.cancel(mail, CancelReason.newer_code.text, now)
            return
        except MailError as exc:
            self._failed(mail, exc)
        else:
            failpoint("mail.after_send")
            mail.status, mail.sent_at, mail.last_error = MailStatus.sent, now, None
            self.counts.sent += 1
            self.failures_in_a_row = 0
        self.save(mail, now)

    def _claim_with_code(
        self, mail: OutgoingMail, member: Member, account: Account, now: datetime
    ) -> codes.IssuedCode | None:
        """Claim the e-mail and store its new code's hash before it leaves. The address it
        goes to is read here: a change committed since the first look is the one read, one
        committed later revokes this code (on PostgreSQL the member row stays locked until
        the commit, or the change's revoke could run before this code is stored)."""
        with transaction(self.session):
            if not _claim(self.session, mail):
                return None
            # FOR SHARE; on SQLite this transaction holds the write lock (BEGIN IMMEDIATE).
            self.session.refresh(member, with_for_update={"read": True})
            if unreachable := _cannot_be_mailed(member):
                self.cancel(mail, unreachable, now)
                return None
            if mail.code_id is not None:
                # A killed run's code, sent or not: the one made now replaces it, whatever
                # becomes of this attempt (else a failed attempt would leave it live, and the
                # next run would take it for a code on its way and cancel the e-mail).
                codes.revoke_code(
                    self.session, code_id=mail.code_id, reason=RevokeReason.superseded
                )
            mail.purpose = codes.purpose_for(account)  # the PIN may have been set since queued
            issued = issue_email_code(
                self.session,
                member_id=account.member_id,
                purpose=mail.purpose,
                requested_by=None,  # a campaign's: no agent asked for this member's code by name
                pepper=self.pepper,
                settings=self.settings,
                now=now,
            )
            mail.code_id = pk(issued.row)
            self.session.add(mail)
            self.audit.start(self.session)
        return issued

    def _failed(self, mail: OutgoingMail, exc: MailError) -> None:
        """Count a failure (its code is already revoked), and decide whether to stop."""
        mail.last_error = str(exc)[:500]
        if isinstance(exc, BadAddress) or mail.attempts >= MAX_ATTEMPTS:
            _give_up(mail, mail.last_error)
            self.counts.failed += 1
        else:
            self.counts.retry += 1
        if isinstance(exc, MailTimeout):  # a server that slow would hold every message
            self.stop = "an SMTP session ran past its deadline"
        elif not isinstance(exc, BadAddress):
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= STOP_AFTER:
                self.stop = f"{STOP_AFTER} e-mails in a row could not be sent"


def send_queued_mail(
    session: Session,
    *,
    settings: Settings,
    agent: str,
    transport: Transport | None = None,
    limit: int | None = None,
    on_progress: Callable[[MailCounts], None] = lambda counts: None,
    on_total: Callable[[int], None] = lambda total: None,
    clock: Clock = system_clock,
) -> MailRun:
    """Send pending e-mails, oldest first, at most `limit`; see the module docstring.
    `on_total` gets how many this run will try (when there are some), `on_progress` the
    counts after each e-mail."""
    if transport is None:
        from cpms_admin.mail.transport import transport_from_settings

        transport = transport_from_settings(settings)
    with one_run(session, MAIL_RUN):
        return _send(
            session,
            settings=settings,
            agent=agent,
            transport=transport,
            limit=limit,
            on_progress=on_progress,
            on_total=on_total,
            clock=clock,
        )


def _send(
    session: Session,
    *,
    settings: Settings,
    agent: str,
    transport: Transport,
    limit: int | None,
    on_progress: Callable[[MailCounts], None],
    on_total: Callable[[int], None],
    clock: Clock,
) -> MailRun:
    audit = RunAudit(agent=agent, action=AuditAction.mail_send, at=clock())
    sender = _Sender(
        session, agent=agent, settings=settings, transport=transport, clock=clock, audit=audit
    )
    last, stopped, tried = 0, None, 0
    if total := _pending(session):
        on_total(total if limit is None else min(total, limit))
    while stopped is None:
        with transaction(session):  # ended before sending: no lock held meanwhile
            batch = session.exec(
                select(OutgoingMail, Member, Account)
                .join(Member, col(Member.id) == OutgoingMail.member_id)
                .join(Account, col(Account.member_id) == Member.id)
                .where(OutgoingMail.status == MailStatus.pending, col(OutgoingMail.id) > last)
                .order_by(col(OutgoingMail.id))
                .limit(BATCH_SIZE)
            ).all()
        if not batch:
            break
        for mail, member, account in batch:
            last = pk(mail)
            if limit is not None and tried >= limit:
                stopped = "limit"
                break
            tried += 1
            sender.send(mail, member, account)
            on_progress(sender.counts)
            if sender.stop is not None:
                stopped = f"{sender.stop} ({mail.last_error})"
                break
    sender.counts.left = _pending(session)
    if any(sender.counts.as_dict().values()):
        with transaction(session):
            audit.finish(
                session,
                counts=sender.counts.as_dict(),
                outcome="ok" if stopped in (None, "limit") else "stopped",
                at=clock(),
            )
    return MailRun(sender.counts, None if stopped == "limit" else stopped)


def _pending(session: Session) -> int:
    from sqlalchemy import func

    with transaction(session):
        total = session.exec(
            select(func.count())
            .select_from(OutgoingMail)
            .where(OutgoingMail.status == MailStatus.pending)
        ).one()
    return int(total)


def check_sent(run: MailRun) -> None:
    """Exit 1 (for cron) when the server refused everything lately, or e-mails were given up."""
    if run.stopped:
        raise Refused(
            f"mail send stopped: {run.stopped}; {count(run.counts.left, 'e-mail')} still "
            "queued for the next run"
        )
    if run.counts.failed:
        raise Refused(
            f"{count(run.counts.failed, 'e-mail')} given up after failing "
            f"(see {agree(run.counts.failed, 'its', 'their')} last_error); "
            f"{agree(run.counts.failed, 'its member needs', 'their members need')} a code by "
            "another channel"
        )
