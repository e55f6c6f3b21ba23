"""Getting a code to the member, and telling them their PIN changed.

`deliver_code` is the one path of every new code. It prepares the code inside the caller's
transaction (an e-mail code is stored, or a letter queued: its code is made when it is
printed) and sends only after that transaction committed; if sending fails, the code that
never reached the member is revoked in a new transaction, audited, and the caller gets a
MailError suggesting the post instead.
"""

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.clock import Clock, iso
from cpms_admin.credentials import codes
from cpms_admin.db import check_committed, transaction
from cpms_admin.errors import CodeSuperseded, CpmsError, MailError, Refused
from cpms_admin.faults import failpoint
from cpms_admin.letters.queue import letter_to_ride, queue_letter
from cpms_admin.mail.transport import Transport
from cpms_admin.members import undeliverable
from cpms_admin.members.nir import format_nir, mask_nir
from cpms_admin.models import Member, pk
from cpms_admin.pepper import Peppers, load_peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    AuditAction,
    Channel,
    ChannelChoice,
    CodeStatus,
    PinChange,
    RevokeReason,
)

log = logging.getLogger(__name__)
# Why a code's e-mail did not leave when no mail server said why (a failure of ours, an
# interruption): the revoke's audit detail names only the kind of failure, never its text.
NOT_SENT = "not sent ({})"


@dataclass(frozen=True)
class CodeDelivery:
    """How a code is on its way: by e-mail (already stored) or in a queued letter."""

    nir: str
    channel: str
    purpose: str
    issued: codes.IssuedCode | None = None
    letter_id: int | None = None
    letter_reused: bool = False

    @property
    def expires_at(self) -> datetime | None:
        return self.issued.row.expires_at if self.issued else None

    def as_json(self) -> dict[str, Any]:
        """What commands print: never the code itself."""
        return {"nir": self.nir, **self.audit_details()}

    def audit_details(self) -> dict[str, Any]:
        """What the audit keeps of it: not the NIR, which the event's member gives, and which
        a sealed event would keep after pseudonymisation took it from the member."""
        return {
            "channel": self.channel,
            "purpose": self.purpose,
            "expires_at": iso(self.expires_at),
            "letter_id": self.letter_id,
            "letter_reused": self.letter_reused,
        }


def resolve_channel(member: Member, channel: str) -> str:
    """`auto` is e-mail when the member has an address, else the post."""
    if channel == ChannelChoice.auto:
        return Channel.email if member.email else Channel.post
    if channel == ChannelChoice.email and not member.email:
        raise Refused(
            f"member {format_nir(member.nir)} has no e-mail address: use --channel post, or "
            f"add one with cpms-admin member update {member.nir} --email ADDRESS"
        )
    return Channel(channel)


def _prepare_code(
    session: Session,
    *,
    member: Member,
    channel: str,
    purpose: str,
    letter_kind: str,
    agent: str,
    settings: Settings,
    now: datetime,
) -> CodeDelivery:
    """Store an e-mail code, or queue a letter (reusing the member's newest letter waiting
    to be printed when it is for the same purpose, so repeated requests do not print several
    letters: the batch prints only a member's newest letter, the older are superseded).
    Does not commit."""
    if channel == Channel.email:
        issued = issue_email_code(
            session,
            member_id=pk(member),
            purpose=purpose,
            requested_by=agent,
            pepper=load_peppers(settings),
            settings=settings,
            now=now,
        )
        return CodeDelivery(member.nir, Channel.email, purpose, issued=issued)
    undeliverable.refuse_if_flagged(member)  # a letter came back from this address
    waiting = letter_to_ride(session, member_id=pk(member), purpose=purpose)
    if waiting is not None:
        if agent != audit.PORTAL:
            # An agent asked for it now: theirs to print, and asked for now (a hard lock
            # since it was queued is one their code may open: codes.opens_hard_lock).
            waiting.requested_by, waiting.created_at = agent, now
            session.add(waiting)
        return CodeDelivery(
            member.nir, Channel.post, waiting.purpose, letter_id=waiting.id, letter_reused=True
        )
    letter = queue_letter(session, member=member, kind=letter_kind, requested_by=agent, now=now)
    return CodeDelivery(member.nir, Channel.post, letter.purpose, letter_id=letter.id)


def deliver_code(
    session: Session,
    *,
    member: Member,
    channel: str,
    purpose: str,
    letter_kind: str,
    agent: str,
    action: AuditAction,
    reason: str | None = None,
    settings: Settings,
    clock: Clock,
    now: datetime,
    transport: Transport | None = None,
    if_unsent: str = "",
    **details: Any,
) -> CodeDelivery:
    """Prepare a code and audit it with `details` in the caller's unit of work; once that
    commits, e-mail it (a letter waits for the nightly batch). A code that could not be
    sent is revoked and the caller gets a MailError that suggests the post, and says
    `if_unsent`: what the caller's unit of work did all the same."""
    with transaction(session) as work:
        delivery = _prepare_code(
            session,
            member=member,
            channel=channel,
            purpose=purpose,
            letter_kind=letter_kind,
            agent=agent,
            settings=settings,
            now=now,
        )
        audit.record(
            session,
            agent=agent,
            action=action,
            member=member,
            reason=reason,
            at=now,
            **details,
            **delivery.audit_details(),
        )
        if delivery.issued is not None:
            work.after_commit(
                functools.partial(
                    _email_for_agent,
                    session,
                    member=member,
                    issued=delivery.issued,
                    agent=agent,
                    settings=settings,
                    clock=clock,
                    transport=transport,
                    still_done=if_unsent,
                )
            )
    return delivery


def _email_for_agent(
    session: Session,
    *,
    member: Member,
    issued: codes.IssuedCode,
    agent: str,
    settings: Settings,
    clock: Clock,
    transport: Transport | None,
    still_done: str,
) -> None:
    """`email_code`, with the way out when it fails: the same code by post; `still_done`
    says what stands all the same."""
    try:
        email_code(
            session,
            member=member,
            issued=issued,
            agent=agent,
            settings=settings,
            clock=clock,
            transport=transport,
        )
    except MailError as exc:
        raise MailError(
            f"{exc}; the new security code was revoked.{still_done} Send one by post: "
            f'cpms-admin code issue {member.nir} --channel post --reason "e-mail failed"'
        ) from None


def issue_email_code(
    session: Session,
    *,
    member_id: int,
    purpose: str,
    requested_by: str | None,
    pepper: Peppers,
    settings: Settings,
    now: datetime,
) -> codes.IssuedCode:
    """Store a code to e-mail. The member's older codes stay live until it has left
    (`email_code` revokes them then): if it never does, they keep the code they hold."""
    return codes.issue_code(
        session,
        member_id=member_id,
        purpose=purpose,
        channel=Channel.email,
        pepper=pepper,
        now=now,
        settings=settings,
        requested_by=requested_by,
        supersede=False,
    )


def email_code(
    session: Session,
    *,
    member: Member,
    issued: codes.IssuedCode,
    agent: str,
    settings: Settings,
    clock: Clock,
    transport: Transport | None = None,
) -> None:
    """After the code's transaction committed: e-mail it, then revoke the member's older
    codes. If it does not leave, whatever stopped it, revoke it instead (audited, in a
    transaction of its own) and re-raise: a code nobody received must not stay live, and
    the one the member already holds must. Serves agents, the portal and `mail send`."""
    from cpms_admin.mail.compose import security_code_message
    from cpms_admin.mail.transport import transport_from_settings

    check_committed(session)  # so the rollback below drops no caller's work
    failpoint("code.before_send")
    _refuse_if_superseded(session, member=member, code_id=pk(issued.row), agent=agent, clock=clock)
    try:
        message = security_code_message(
            settings=settings,
            to=member.email or "",
            first_name=member.first_name,
            last_name=member.last_name,
            civility=member.civility,
            code=issued.clear,
            expires_at=issued.row.expires_at,
            purpose=issued.row.purpose,
            now=clock(),
            asked_by=codes.asker(issued.row.requested_by),
        )
        (transport or transport_from_settings(settings)).send(message)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, MailError) else NOT_SENT.format(type(exc).__name__)
        _revoke_unsent(
            session, member=member, code_id=pk(issued.row), agent=agent, error=error, clock=clock
        )
        raise
    with transaction(session):
        codes.supersede_older(session, code=issued.row)


def _refuse_if_superseded(
    session: Session, *, member: Member, code_id: int, agent: str, clock: Clock
) -> None:
    """CodeSuperseded, audited, when a newer code reached the member since this one was
    stored (read now: it may have waited, a `mail send` run between e-mails): it would open
    nothing."""
    with transaction(session):
        superseded = codes.status_of(session, code_id=code_id) != CodeStatus.pending
        if superseded:  # revoked by the newer code's sending
            _audit_revoke(
                session, member=member, code_id=code_id, agent=agent, clock=clock,
                outcome="superseded", revoked=False,
            )  # fmt: skip
    if superseded:
        raise CodeSuperseded(
            f"the code for {format_nir(member.nir)} was not e-mailed: a newer code reached the "
            "member meanwhile (another agent, the portal, or a campaign's e-mail), and revoked it"
        )


def _revoke_unsent(
    session: Session,
    *,
    member: Member,
    code_id: int,
    agent: str,
    error: str,
    clock: Clock,
) -> None:
    session.rollback()  # what the interrupted send left (no caller's work: check_committed)
    with transaction(session):
        revoked = codes.revoke_code(session, code_id=code_id, reason=RevokeReason.mail_failed)
        _audit_revoke(
            session, member=member, code_id=code_id, agent=agent, clock=clock,
            outcome="mail_failed", revoked=revoked, error=error,
        )  # fmt: skip


def _audit_revoke(
    session: Session,
    *,
    member: Member,
    code_id: int,
    agent: str,
    clock: Clock,
    outcome: str,
    **details: Any,
) -> None:
    """The `code.revoke` event of a code e-mailed to nobody: why (`outcome`), and details."""
    audit.record(
        session,
        agent=agent,
        action=AuditAction.code_revoke,
        member=member,
        outcome=outcome,
        at=clock(),
        code_id=code_id,
        **details,
    )


def notify_pin_changed(
    *,
    member: Member,
    how: PinChange,
    changed_at: datetime,
    settings: Settings,
    transport: Transport | None = None,
) -> bool:
    """After commit: tell a member with an address that their PIN was set, changed or reset.
    A failure is logged, not raised: the change itself is done and must not look failed."""
    if not member.email:
        return False
    from cpms_admin.mail.compose import pin_changed_message
    from cpms_admin.mail.transport import transport_from_settings

    try:
        message = pin_changed_message(
            settings=settings,
            to=member.email,
            first_name=member.first_name,
            last_name=member.last_name,
            civility=member.civility,
            changed_at=changed_at,
            how=how,
        )
        (transport or transport_from_settings(settings)).send(message)
    except CpmsError as exc:  # a bad address, CPMS_SMTP_URL or template included
        log.warning("PIN %s notice for member %s not sent: %s", how, mask_nir(member.nir), exc)
        return False
    return True
