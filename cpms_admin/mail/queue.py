"""`mail send`: deliver the queued campaign e-mails, each with a code made at send time.

For each e-mail: claim it (one more attempt, compare-and-set, so two runs at once never
send the same one), store the new code's hash and commit, then send. Sent: marked sent.
Failed: the code that never arrived is revoked and the e-mail waits for the next run,
until MAX_ATTEMPTS (an address the mail library refuses is given up at once). After
STOP_AFTER failures in a row, or one session past its deadline, the server is taken to be
down and the run stops, leaving the rest untouched for the next run. An e-mail sent,
cancelled or given up gets an audit event for its member in the transaction that says so,
beside the run's one event (see audit.RunAudit).

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

from sqlalchemy import update
from sqlmodel import Session, SQLModel, col, select

from cpms_admin.audit import RunAudit
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials import codes
from cpms_admin.credentials.on_its_way import on_its_way
from cpms_admin.credentials.pepper import load_peppers
from cpms_admin.errors import Refused
from cpms_admin.faults import failpoint
from cpms_admin.mail.transport import MailError, MailTimeout, Transport
from cpms_admin.models import Account, Member, OutgoingMail, pk
from cpms_admin.settings import Settings

MAX_ATTEMPTS = 5
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


def _claim(session: Session, mail: OutgoingMail) -> bool:
    """Count one more attempt, only if no other run did since the row was read."""
    table = SQLModel.metadata.tables["outgoing_mail"]  # Core: the ORM object is set by hand
    claimed = session.execute(
        update(table)
        .where(
            table.c.id == pk(mail), table.c.status == "pending", table.c.attempts == mail.attempts
        )
        .values(attempts=table.c.attempts + 1)
        .returning(table.c.id)
    ).first()
    if claimed is not None:
        mail.attempts += 1
    return claimed is not None


def _give_up(mail: OutgoingMail, reason: str) -> None:
    mail.status, mail.last_error = "failed", reason


def _no_longer_needed(
    session: Session, mail: OutgoingMail, member: Member, now: datetime
) -> str | None:
    if member.status != "active":
        return "member closed"
    if not member.email:
        return "no e-mail address"
    # This e-mail's own code, made by a run killed before it could mark the e-mail sent, may
    # never have left: it is no reason to cancel, and the code sent now replaces it.
    return on_its_way(session, member_id=pk(member), now=now, except_code_id=mail.code_id)


class _Sender:
    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        transport: Transport,
        clock: Clock,
        audit: RunAudit,
    ) -> None:
        self.session, self.settings, self.clock = session, settings, clock
        self.transport, self.audit = transport, audit
        self.pepper = load_peppers(settings)
        self.counts = MailCounts()
        self.failures_in_a_row = 0
        self.stop: str | None = None  # why the run must stop: the server looks down

    def commit(self, settled: OutgoingMail | None = None, at: datetime | None = None) -> None:
        """Refresh the run's audit event and commit; with an e-mail that was just sent,
        cancelled or given up (`settled`), add an event for its member too."""
        self.audit.record(self.session, counts=self.counts.as_dict())
        if settled is not None and settled.status != "pending":
            member_ids = [settled.member_id]
            self.audit.record_members(self.session, member_ids, change=settled.status, at=at)
        self.session.commit()

    def send(self, mail: OutgoingMail, member: Member, account: Account) -> None:
        # Read a moment ago with its batch: the member may have left or changed address since.
        self.session.refresh(member)
        self.session.refresh(account)
        now: datetime = self.clock()
        moot = _no_longer_needed(self.session, mail, member, now)
        if moot is not None:
            mail.status, mail.last_error = "cancelled", moot
            self.counts.cancelled += 1
            self.session.add(mail)
            self.commit(mail, now)
            return
        if not _claim(self.session, mail):
            self.session.rollback()  # another run has it
            return
        assert member.email is not None
        mail.purpose = codes.purpose_for(account)  # the PIN may have been set since queued
        issued = codes.issue_code(
            self.session,
            member_id=pk(member),
            purpose=mail.purpose,
            channel="email",
            pepper=self.pepper,
            now=now,
            settings=self.settings,
            requested_by=None,  # a campaign's: no agent asked for this member's code by name
        )
        mail.code_id = pk(issued.row)
        self.session.add(mail)
        self.commit()  # the code's hash is stored before the e-mail leaves
        failpoint("mail.before_send")
        from cpms_admin.mail.compose import security_code_message

        try:
            self.transport.send(
                security_code_message(
                    settings=self.settings,
                    to=member.email,
                    first_name=member.first_name,
                    last_name=member.last_name,
                    civility=member.civility,
                    code=issued.clear,
                    expires_at=issued.row.expires_at,
                    purpose=mail.purpose,
                )
            )
        except BaseException as exc:
            # Whatever stopped it, the code never left: it must not stay live.
            codes.revoke_code(self.session, code_id=pk(issued.row))
            if not isinstance(exc, MailError | ValueError):
                self.commit()
                raise
            mail.last_error = str(exc)[:500]
            if isinstance(exc, ValueError) or mail.attempts >= MAX_ATTEMPTS:
                _give_up(mail, mail.last_error)  # ValueError: an address no server would take
                self.counts.failed += 1
            else:
                self.counts.retry += 1
            if isinstance(exc, MailTimeout):  # a server that slow would hold every message
                self.stop = "an SMTP session ran past its deadline"
            elif isinstance(exc, MailError):
                self.failures_in_a_row += 1
                if self.failures_in_a_row >= STOP_AFTER:
                    self.stop = f"{STOP_AFTER} e-mails in a row could not be sent"
        else:
            failpoint("mail.after_send")
            mail.status, mail.sent_at, mail.last_error = "sent", now, None
            self.counts.sent += 1
            self.failures_in_a_row = 0
        self.session.add(mail)
        self.commit(mail, now)


def send_queued_mail(
    session: Session,
    *,
    settings: Settings,
    agent: str,
    transport: Transport | None = None,
    limit: int | None = None,
    on_progress: Callable[[MailCounts], None] = lambda counts: None,
    clock: Clock = system_clock,
) -> MailRun:
    """Send pending e-mails, oldest first, at most `limit`; see the module docstring."""
    if transport is None:
        from cpms_admin.mail.transport import transport_from_settings

        transport = transport_from_settings(settings)
    audit = RunAudit(agent=agent, action="mail.send", at=clock())
    sender = _Sender(session, settings=settings, transport=transport, clock=clock, audit=audit)
    last, stopped, tried = 0, None, 0
    while stopped is None:
        batch = session.exec(
            select(OutgoingMail, Member, Account)
            .join(Member, col(Member.id) == OutgoingMail.member_id)
            .join(Account, col(Account.member_id) == Member.id)
            .where(OutgoingMail.status == "pending", col(OutgoingMail.id) > last)
            .order_by(col(OutgoingMail.id))
            .limit(BATCH_SIZE)
        ).all()
        session.commit()  # no read transaction (nor SQLite lock) held while sending
        if not batch:
            break
        for mail, member, account in batch:
            last = pk(mail)
            if limit is not None and tried >= limit:
                stopped = "limit"
                break
            tried += 1
            sender.send(mail, member, account)
            if sender.stop is not None:
                stopped = f"{sender.stop} ({mail.last_error})"
                break
        on_progress(sender.counts)
    sender.counts.left = _pending(session)
    if any(sender.counts.as_dict().values()):
        audit.record(
            session,
            counts=sender.counts.as_dict(),
            outcome="ok" if stopped in (None, "limit") else "stopped",
        )
        session.commit()
    return MailRun(sender.counts, None if stopped == "limit" else stopped)


def _pending(session: Session) -> int:
    from sqlalchemy import func

    total = session.exec(
        select(func.count()).select_from(OutgoingMail).where(OutgoingMail.status == "pending")
    ).one()
    session.commit()
    return int(total)


def check_sent(run: MailRun) -> None:
    """Exit 1 (for cron) when the server refused everything lately, or e-mails were given up."""
    if run.stopped:
        raise Refused(
            f"mail send stopped: {run.stopped}; {run.counts.left:,} e-mail(s) still "
            "queued for the next run"
        )
    if run.counts.failed:
        raise Refused(
            f"{run.counts.failed:,} e-mail(s) given up after failing "
            f"(see their last_error); their members need a code by another channel"
        )
