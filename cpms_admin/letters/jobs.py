"""Rendering a claimed batch into its staging directory, chunk by chunk.

Each letter's code is made here, just before its chunk is rendered; the clear value goes into
the PDF and into `Issued` (kept in memory until the commit stores its hash), nowhere else.
The letters are read from the database one chunk at a time, each read in a short transaction
of its own (on SQLite every transaction holds the write lock), so memory and locks stay flat
whatever the size of the batch.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cpms_admin.credentials.code_hash import generate_code
from cpms_admin.credentials.codes import asker, postal_last_day
from cpms_admin.errors import Unprintable
from cpms_admin.faults import failpoint
from cpms_admin.french import paris_time
from cpms_admin.letters.files import PART, reserve_file, seal_file
from cpms_admin.letters.pdf.content import (
    LetterContent,
    LockoutTerms,
    letter_reference,
    salutation_for,
)
from cpms_admin.members.nir import mask_nir
from cpms_admin.members.postal import address_lines
from cpms_admin.models import Letter, Member, pk
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import LetterStatus, Wording

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Issued:
    """A code printed in this batch, to be stored (hashed) at commit time."""

    letter_id: int
    member_id: int
    purpose: str
    code: str = field(repr=False)
    delivery_lines: tuple[str, ...] = ()  # the address block below the name, as printed


@dataclass
class Rendered:
    issued: list[Issued] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # letter id -> why it cannot print
    letters: list[dict[str, Any]] = field(default_factory=list)  # manifest entries
    files: list[dict[str, Any]] = field(default_factory=list)
    page_sizes: set[str] = field(default_factory=set)  # "A4", as the print house names it

    @property
    def pages(self) -> int:
        return sum(entry["pages"] for entry in self.files)


@dataclass(frozen=True)
class RenderJob:
    engine: Engine
    batch_id: int
    staging: Path
    settings: Settings
    return_address: tuple[str, ...]  # `zones.letterhead(settings)`, checked by the run
    now: datetime
    total: int
    duplex: bool = False
    chunk_size: int = 25
    workers: int = 1


def _claimed(job: RenderJob, after: int) -> list[tuple[Letter, Member]]:
    """The next claimed letters after id `after`, with their members, as read now."""
    with Session(job.engine) as session:  # closed at once: the transaction ends here
        rows = session.exec(
            select(Letter, Member)
            .join(Member, col(Member.id) == Letter.member_id)
            .where(
                Letter.batch_id == job.batch_id,
                Letter.status == LetterStatus.claimed,
                col(Letter.id) > after,
            )
            .order_by(col(Letter.id))
            .limit(job.chunk_size)
        ).all()
    return [(letter, member) for letter, member in rows]


def _content(job: RenderJob, letter: Letter, member: Member, code: str) -> LetterContent:
    return LetterContent(
        letter_id=pk(letter),
        kind=letter.kind,
        wording=Wording.of_letter(letter.kind, letter.requested_by, letter.wording),
        asked_by=asker(letter.requested_by),
        recipient_lines=tuple(address_lines(member)),
        nir_masked=mask_nir(member.nir),
        code=code,
        code_expires_on=postal_last_day(job.now, job.settings),  # as stored at commit
        letter_date=paris_time(job.now).date(),
        reference=letter_reference(pk(letter)),
        salutation=salutation_for(member.civility),
        portal_url=job.settings.portal_url,
        place=job.settings.letter_city,
        return_address=job.return_address,
        lockout=LockoutTerms.of(job.settings),
    )


def render_batch(job: RenderJob, *, progress: Progress) -> Rendered:
    """Render every claimed letter of the batch into `<staging>/letters-NNNN.pdf.part`."""
    from cpms_admin.letters.pdf.pdf_file import page_sizes
    from cpms_admin.letters.pool import render_chunks

    result = Rendered()
    described: dict[int, dict[str, Any]] = {}
    chunks = _chunks(job, result, described)
    done = 0
    progress(0, job.total)
    # Closed on any error, so no worker goes on writing into a batch being abandoned.
    with contextlib.closing(
        render_chunks(chunks, duplex=job.duplex, workers=job.workers)
    ) as rendered:
        for path, spans in rendered:
            name = path.name.removesuffix(PART)
            for span in spans:
                result.letters.append(
                    {
                        "letter_id": span.letter_id,
                        **described.pop(span.letter_id),
                        "file": name,
                        "first_page": span.first_page,
                        "page_count": span.page_count,
                    }
                )
            pages = sum(span.page_count for span in spans)
            result.files.append({"name": name, "pages": pages, "sha256": seal_file(path)})
            result.page_sizes |= page_sizes(path)
            done += len(spans)
            progress(done + len(result.failed), job.total)
            if len(result.files) == 1:
                failpoint("letters.mid_render")
    return result


def _chunks(
    job: RenderJob, result: Rendered, described: dict[int, dict[str, Any]]
) -> Iterator[tuple[Path, list[LetterContent]]]:
    """The claimed letters read a page of rows at a time, each given its code and its content,
    as the chunks of a file each: a letter that cannot be laid out goes to `result.failed`, one
    that can to `result.issued` and `described` (its line of the manifest so far)."""
    after, number = 0, 0
    while rows := _claimed(job, after):
        after = pk(rows[-1][0])
        contents = []
        for letter, member in rows:
            code = generate_code()
            try:
                content = _content(job, letter, member, code)
            except Unprintable as exc:  # e.g. an address that does not fit the window
                result.failed[pk(letter)] = str(exc)
                continue
            contents.append(content)
            result.issued.append(
                Issued(pk(letter), pk(member), letter.purpose, code, content.recipient_lines[1:])
            )
            described[pk(letter)] = {
                "kind": letter.kind,
                "wording": content.wording,
                "nir_masked": content.nir_masked,
            }
        if contents:
            number += 1
            path = job.staging / f"letters-{number:04d}.pdf{PART}"
            reserve_file(path)
            yield path, contents
