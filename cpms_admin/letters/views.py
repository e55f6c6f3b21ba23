"""Looking at letters without printing any: the queue listing and the preview sample."""

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.clock import Clock, iso
from cpms_admin.credentials.codes import postal_last_day
from cpms_admin.db import Page, fetch_page
from cpms_admin.errors import InvalidInput, Unprintable
from cpms_admin.french import paris_time
from cpms_admin.letters.pdf import zones
from cpms_admin.letters.pdf.content import (
    LockoutTerms,
    address_pt,
    salutation_for,
    sample_content,
)
from cpms_admin.members.nir import mask_nir
from cpms_admin.members.postal import address_lines
from cpms_admin.members.records import get_member
from cpms_admin.models import Letter, Member
from cpms_admin.private_files import write_private_atomically
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import LetterKind, LetterStatus, Wording


@dataclass(frozen=True, slots=True)
class ListedLetter:
    """A line of `letters list`: the letter, and its member's NIR."""

    letter: Letter
    nir: str

    def as_json(self) -> dict[str, Any]:
        letter = self.letter
        return {
            "id": letter.id,
            "kind": letter.kind,
            "status": letter.status,
            "nir": self.nir,
            "created_at": iso(letter.created_at),
            "batch_id": letter.batch_id,
            "printed_at": iso(letter.printed_at),
            "status_reason": letter.status_reason,
        }


def list_letters(
    session: Session,
    *,
    status: str | None = None,
    nir: str | None = None,
    limit: int | None = 200,
) -> Page:
    """Newest first, as ListedLetter; `limit=None` for all."""
    if status is not None and status not in set(LetterStatus):
        raise InvalidInput(f"unknown letter status {status!r}: one of {', '.join(LetterStatus)}")
    query = select(Letter, Member.nir).join(Member, col(Member.id) == Letter.member_id)
    if status is not None:
        query = query.where(Letter.status == status)
    if nir is not None:
        query = query.where(Letter.member_id == get_member(session, nir).id)
    found = fetch_page(session, query.order_by(col(Letter.id).desc()), limit)
    return Page((ListedLetter(letter, member_nir) for letter, member_nir in found), found.total)


@dataclass(frozen=True, slots=True)
class Preview:
    """A specimen letter written: `letters preview --json`."""

    kind: str
    wording: str
    out: Path
    pages: int
    nir_masked: str

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "wording": self.wording,
            "out": str(self.out),
            "pages": self.pages,
            "specimen": True,
            "nir_masked": self.nir_masked,
        }


def preview_letter(
    *,
    kind: str,
    out: Path,
    settings: Settings,
    clock: Clock,
    session: Session | None = None,
    nir: str | None = None,
    wording: str | None = None,
) -> Preview:
    """Render one SPÉCIMEN letter with a dummy code to `out`; with `nir`, addressed to that
    member; `wording` as a campaign would choose it (else the kind's own). Reads at most one
    member; stores nothing, issues no code. `out` is written as every file for people
    (private_files): owner-only, never through a link, never onto the database."""
    from cpms_admin.letters.pdf.render import renderer_for

    if kind not in set(LetterKind):
        raise InvalidInput(f"unknown letter kind {kind!r}: one of {', '.join(LetterKind)}")
    if wording is not None and wording not in set(Wording):
        raise InvalidInput(f"unknown letter wording {wording!r}: one of {', '.join(Wording)}")
    if not out.parent.is_dir():
        raise InvalidInput(f"cannot write {out}: directory {out.parent} does not exist")
    return_address = zones.letterhead(settings)
    now = clock()
    content = sample_content(
        kind,
        today=paris_time(now).date(),
        expires_on=postal_last_day(now, settings),  # what a letter printed now would say
        portal_url=settings.portal_url,
        place=settings.letter_city,
        wording=wording or "",
        return_address=return_address,
        lockout=LockoutTerms.of(settings),
    )
    if nir is not None:
        assert session is not None, "a member's preview needs a session"
        member = get_member(session, nir)
        session.expunge(member)  # kept as read: the rollback would expire it, to be read again
        session.rollback()  # nothing more to read: release the transaction before rendering
        if (why := why_unprintable(member)) is not None:
            raise Unprintable(f"this member's letter cannot be printed: {why}")
        content = replace(
            content,
            recipient_lines=tuple(address_lines(member)),
            nir_masked=mask_nir(member.nir),
            salutation=salutation_for(member.civility),
        )
    with tempfile.TemporaryDirectory() as scratch:  # rendered, then written as every file
        rendered = Path(scratch) / "preview.pdf"
        spans = renderer_for().render([content], rendered)
        try:
            with write_private_atomically(out) as handle:
                handle.write(rendered.read_bytes())
        except OSError as exc:
            raise InvalidInput(f"cannot write {out}: {exc.strerror or exc}") from None
    return Preview(kind, content.wording, out, spans[0].page_count, content.nir_masked)


def why_unprintable(member: Member) -> str | None:
    """Why no letter to the member's address, as it is now, can be printed (the batch's own
    check: the norm's shape, the envelope's window), or None when one can."""
    try:
        address_pt(address_lines(member))
    except Unprintable as exc:
        return str(exc)
    return None
