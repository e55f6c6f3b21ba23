"""`member dossier`: everything held on a member, for their right of access (GDPR article 15).

The dossier holds the member's identity, contact and address (the AFNOR lines as printed),
their account's state, the history of their one-time codes, letters and e-mails, and every
audit event about them, with the retention periods that apply. It never holds a secret: no
PIN or code hash, and no code (a code exists in clear only in the letter or e-mail made for
it). Who acted is given as the portal (the member themselves) or CPMS, not as the agent's
name: the right of access covers what was done with one's data, when and why, not which
employee did it (CJEU, C-579/21, 22 June 2023); `audit list --nir` shows the names to the
data protection officer.

Written as JSON (`as_document`: stable keys, ISO 8601 times in UTC) or as a French PDF
(`dossier_pdf`), owner-only and never through a planted link; refused over an existing file
unless forced. Audited (`member.dossier`, with the format, never the content) in a
transaction committed before the file appears: a file never exists without its event.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.clock import Clock, iso
from cpms_admin.credentials.codes import is_live
from cpms_admin.db import transaction
from cpms_admin.errors import Conflict, InvalidInput
from cpms_admin.members.records import get_account, get_member
from cpms_admin.members.views import account_view, member_summary
from cpms_admin.models import AuditEvent, Letter, Member, OutgoingMail, SecurityCode, pk
from cpms_admin.private_files import describe_entry, write_private_atomically
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import ActedBy, AuditAction, CodeStatus, Wording

# The tables of what a member owns, read whole for the dossier.
_Owned = TypeVar("_Owned", SecurityCode, Letter, OutgoingMail, AuditEvent)

FORMATS = ("json", "pdf")


def dossier_format(out: Path, fmt: str | None) -> str:
    """`fmt`, or the one `out`'s suffix names; InvalidInput otherwise."""
    if out.is_dir():
        raise InvalidInput(f"{out} is a directory: give the dossier's file, e.g. {out}/NIR.pdf")
    chosen = (fmt or out.suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        given = f"--format {fmt!r}" if fmt else f"the suffix of {out.name!r}"
        raise InvalidInput(f"{given} is not a dossier format: give --format json or pdf")
    return chosen


def _who(agent: str | None) -> ActedBy | None:
    """The portal (the member), CPMS (an agent or a rule), or nobody recorded."""
    if agent is None:
        return None
    return ActedBy.portal if agent == audit.PORTAL else ActedBy.cpms


def _code_state(code: SecurityCode, now: datetime) -> str:
    if code.status == CodeStatus.pending:
        return "live" if is_live(code, now) else "expired"
    return code.status


def as_document(session: Session, member: Member, *, settings: Settings, now: datetime) -> Any:
    """The dossier as the JSON document `member dossier` writes (docs/scripting.md)."""
    member_id = pk(member)
    account = get_account(session, member)
    return {
        "generated_at": iso(now),
        "member": {
            **member_summary(member),
            "created_at": iso(member.created_at),
            "updated_at": iso(member.updated_at),
            "imported_at": iso(member.imported_at),
            "closed_at": iso(member.closed_at),
            "closed_reason": member.closed_reason,
        },
        "account": {
            **account_view(account, now),
            "pin_set_at": iso(account.pin_set_at),
            "hard_locked_at": iso(account.hard_locked_at),
            "terms_accepted_at": iso(account.terms_accepted_at),
        },
        "codes": [_code(code, now) for code in _rows_of(session, SecurityCode, member_id)],
        "letters": [_letter(letter) for letter in _rows_of(session, Letter, member_id)],
        "emails": [_email(mail) for mail in _rows_of(session, OutgoingMail, member_id)],
        "audit_events": [_event(event) for event in _rows_of(session, AuditEvent, member_id)],
        "retention": {
            "closed_members_days": settings.retention_closed_members_days,
            "audit_days": settings.retention_audit_days,
        },
    }


def _code(code: SecurityCode, now: datetime) -> dict[str, Any]:
    return {
        "id": code.id,
        "purpose": code.purpose,
        "channel": code.channel,
        "state": _code_state(code, now),
        "revoked_reason": code.revoked_reason,  # why, when revoked (none before 0019)
        "created_at": iso(code.created_at),
        "expires_at": iso(code.expires_at),
        "used_at": iso(code.used_at),
        "failed_tries": code.failed_tries,
        "letter_id": code.letter_id,
        "requested_by": _who(code.requested_by),
    }


def _letter(letter: Letter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "kind": letter.kind,
        "wording": Wording.of_letter(letter.kind, letter.requested_by, letter.wording),
        "status": letter.status,
        "status_reason": letter.status_reason,
        "created_at": iso(letter.created_at),
        "batch_id": letter.batch_id,
        "printed_at": iso(letter.printed_at),
        "requested_by": _who(letter.requested_by),
    }


def _email(mail: OutgoingMail) -> dict[str, Any]:
    return {
        "id": mail.id,
        "kind": mail.kind,
        "purpose": mail.purpose,
        "status": mail.status,
        "attempts": mail.attempts,
        "last_error": mail.last_error,
        "created_at": iso(mail.created_at),
        "sent_at": iso(mail.sent_at),
    }


def _event(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "by": _who(event.agent),
        "action": event.action,
        "reason": event.reason,
        "outcome": event.outcome,
        "details": json.loads(event.details),
    }


@dataclass(frozen=True)
class Written:
    nir: str
    out: Path
    format: str
    counts: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """What `member dossier --json` prints: where it went, never what it says."""
        return {"nir": self.nir, "out": str(self.out), "format": self.format, **self.counts}


def write_dossier(
    session: Session,
    *,
    nir: str,
    out: Path,
    fmt: str | None,
    force: bool,
    settings: Settings,
    agent: str,
    clock: Clock,
) -> Written:
    """Write the member's dossier to `out` (0600), audited. Conflict when `out` exists and
    not `force`; InvalidInput when it cannot be written there."""
    fmt = dossier_format(out, fmt)
    if not force and describe_entry(out) is not None:
        raise Conflict(f"{out} already exists: give --force to replace it, or another name")
    member = get_member(session, nir)
    now = clock()
    document = as_document(session, member, settings=settings, now=now)
    compact = member.nir
    session.rollback()  # nothing more to read: the rendering holds no transaction
    if fmt == "pdf":
        from cpms_admin.privacy.dossier_pdf import render_pdf

        data = render_pdf(document)
    else:
        data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    try:
        with write_private_atomically(out) as handle:
            handle.write(data)
            with transaction(session):  # committed before the file appears under its name
                audit.record(
                    session,
                    agent=agent,
                    action=AuditAction.member_dossier,
                    member=member,
                    at=now,
                    format=fmt,
                )
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror or exc}") from None
    counts = {name: len(document[name]) for name in ("codes", "letters", "emails", "audit_events")}
    return Written(nir=compact, out=out, format=fmt, counts=counts)


def _rows_of(session: Session, model: type[_Owned], member_id: int) -> Sequence[_Owned]:
    """The member's rows of `model`, oldest first."""
    return session.exec(
        select(model).where(model.member_id == member_id).order_by(col(model.id))
    ).all()
