"""`letters returned`: letters the post brought back undeliverable (NPAI, "n'habite pas à
l'adresse indiquée"), one by its id or many from the print house's file.

In one transaction: each letter is marked returned, the code it carried is revoked (the
letter may have been opened by someone else), and the member's address is flagged
undeliverable, so no letter goes there until an agent updates it (`members.undeliverable`);
each return is audited on its member. A letter that bore another address than the member's
current one (compared by the keyed digest the batch kept of its lines, `Letter.address_digest`)
does not flag the member's address. Recording a return twice changes nothing.
"""

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.bulk.readers import Record, csv_records
from cpms_admin.bulk.sniff import decode_whole, resolve_delimiter
from cpms_admin.clock import Clock
from cpms_admin.credentials.codes import revoke_printed
from cpms_admin.db import transaction
from cpms_admin.errors import InvalidInput, NotFound, Refused
from cpms_admin.french import agent_time
from cpms_admin.letters.voiding import bore_other_address, void_printed
from cpms_admin.members import undeliverable
from cpms_admin.members.afnor import strip_accents
from cpms_admin.models import Letter, Member, pk
from cpms_admin.pepper import Peppers
from cpms_admin.private_files import refuse_reserved_source
from cpms_admin.vocabulary import AuditAction, LetterStatus, RevokeReason

# What the program writes itself of a return (privacy/dossier_pdf.py words them in French).
RETURNED_BY_POST = "NPAI returned by the post"  # `letters returned`'s reason when none is given
RETURNED_ON = "returned undeliverable on {}: {}"  # the letter's status_reason
RETURNED = "returned undeliverable on {}"  # ... a pseudonymised member's: nothing about them
CAME_BACK = "letter #{} came back: {}"  # why the member's address is flagged

ID_COLUMNS = ("letter_id", "reference", "ref", "id")
REASON_COLUMNS = ("reason", "motif")
LETTER_REF = re.compile(r"(?:L|#)?0*(\d{1,12})", re.IGNORECASE)
MAX_REASON = 200
MAX_FILE_BYTES = 16 << 20  # a night's returns are a few kilobytes


@dataclass(frozen=True)
class Return:
    letter_id: int
    why: str = undeliverable.NPAI  # as the print house's file says it
    line: int | None = None  # of the print house's file, to name it in a refusal

    def named(self) -> str:
        return f"#{self.letter_id}" + (f" (line {self.line})" if self.line else "")


@dataclass
class ReturnsResult:
    returned: list[int] = field(default_factory=list)
    already_returned: list[int] = field(default_factory=list)
    codes_revoked: int = 0
    members_flagged: int = 0
    # Bore an address the member has left: recorded, the member's address not flagged.
    address_changed_since: list[int] = field(default_factory=list)
    # The members' other letters in the post to an address now flagged: their codes revoked.
    letters_voided: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "returned": self.returned,
            "already_returned": self.already_returned,
            "codes_revoked": self.codes_revoked,
            "members_flagged": self.members_flagged,
            "address_changed_since": self.address_changed_since,
            "letters_voided": self.letters_voided,
        }


def letter_id(value: str) -> int:
    """A letter as the agent or the print house names it: `12`, `#12` or `L00000012`."""
    match = LETTER_REF.fullmatch(value.strip())
    if match is None:
        raise InvalidInput(f"{value!r} is not a letter id (12, or its reference L00000012)")
    return int(match[1])


def read_returns_file(path: Path, *, encoding: str | None = None) -> list[Return]:
    """The print house's CSV: a header with `letter_id` or `reference` (and optionally `reason`
    or `motif`), `,` or `;`, encoded as office software writes (found as for `members
    import`, or given). Any bad row refuses the whole file."""
    refuse_reserved_source(path, "a returns file")
    try:
        with open(path, "rb") as handle:  # a pipe too: read once
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the returns file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{path}: more than {MAX_FILE_BYTES >> 20} MiB, which no night's returns are: "
            "not a returns file"
        )
    text = decode_whole(path, raw, encoding)
    first = text.splitlines()[0] if text.strip() else ""
    # newline=None: a CSV saved by a Mac spreadsheet ends its lines with a lone CR.
    records = csv_records(
        io.StringIO(text, newline=None), path=path, delimiter=resolve_delimiter(None, header=first)
    )
    return _returns(path, records)


def _returns(path: Path, records: Iterator[Record]) -> list[Return]:
    """The returns the file's rows name; the line numbers are the file's, blank lines and
    values over several lines counted, as `members import` counts them."""
    header = next((_fields(path, record) for record in records), [])
    # `Référence`, ` Motif `: a French spreadsheet's header reads as the names above.
    said = [strip_accents(name.strip().lower()) for name in header]
    columns = dict(zip(said, header, strict=True))
    read = [name for name in said if name in ID_COLUMNS or name in REASON_COLUMNS]
    if repeated := sorted({name for name in read if read.count(name) > 1}):
        raise InvalidInput(f"{path}: repeated columns: {', '.join(repeated)}; keep one of each")
    if len(reasons := [name for name in read if name in REASON_COLUMNS]) > 1:
        raise InvalidInput(f"{path}: two reason columns, {' and '.join(reasons)}; keep one")
    id_columns = [columns[c] for c in ID_COLUMNS if c in columns]
    if not id_columns:
        raise InvalidInput(f"{path}: no letter_id or reference column in the header")
    why_column = next((columns[c] for c in REASON_COLUMNS if c in columns), None)
    found: dict[int, Return] = {}
    lines: dict[int, int] = {}  # letter -> the line that first named it
    for record in records:
        number, row = record[0], dict(zip(header, _fields(path, record), strict=False))
        named: dict[int, str] = {}  # letter -> the column that named it; one row, one letter
        for column in id_columns:
            if value := (row.get(column) or "").strip():
                try:
                    named.setdefault(letter_id(value), column)
                except InvalidInput as exc:
                    raise InvalidInput(f"{path}: line {number}: {exc}") from None
        if not named:  # a blank row never reaches here: a letter's id lost in a spreadsheet
            raise InvalidInput(f"{path}: line {number}: no letter id or reference")
        if len(named) > 1:
            listed = " and ".join(f"{column} names #{i}" for i, column in named.items())
            raise InvalidInput(f"{path}: line {number}: {listed}; which letter came back?")
        [letter] = named
        why = " ".join((row.get(why_column) or "").split()) if why_column else ""
        try:
            why = audit.clean_text(why, what="the reason", max_length=MAX_REASON) if why else ""
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: line {number}: {exc}") from None
        back = Return(letter, why or undeliverable.NPAI, number)
        if letter in found and _same_why(found[letter].why) != _same_why(back.why):
            raise InvalidInput(
                f"{path}: line {number}: letter #{letter} is on line {lines[letter]} too, with "
                "another reason; which one is right?"
            )
        found.setdefault(letter, back)
        lines.setdefault(letter, number)
    if not found:
        raise InvalidInput(f"{path}: no letter in the file")
    return list(found.values())


def _fields(path: Path, record: Record) -> list[str]:
    number, fields, problem = record
    if fields is None:
        raise InvalidInput(f"{path}: line {number}: {problem}")
    return fields


def _same_why(why: str) -> str:
    """What a reason says, however written: `NPAI`, `npai` and none at all are one."""
    said = why.casefold()
    return "npai" if said == undeliverable.NPAI.casefold() else said


def record_returns(
    session: Session,
    *,
    returns: list[Return],
    peppers: Peppers,
    agent: str,
    reason: str,
    clock: Clock,
) -> ReturnsResult:
    """Record the returned letters (see the module docstring); nothing changes if any of them
    is unknown or was never printed."""
    result = ReturnsResult()
    with transaction(session):
        now = clock()
        ids = [r.letter_id for r in returns]
        letters = {
            letter.id: letter
            for letter in session.exec(select(Letter).where(col(Letter.id).in_(ids)))
        }
        if missing := [r for r in returns if r.letter_id not in letters]:
            raise NotFound(f"no letter {', '.join(r.named() for r in missing)}; nothing recorded")
        never = [
            r
            for r in returns
            if letters[r.letter_id].status not in (LetterStatus.printed, LetterStatus.returned)
        ]
        if never:
            listed = ", ".join(f"{r.named()}: {letters[r.letter_id].status}" for r in never)
            raise Refused(f"only a printed letter can come back: {listed}; nothing recorded")
        for back in returns:
            letter = letters[back.letter_id]
            if letter.status == LetterStatus.returned:
                result.already_returned.append(back.letter_id)
                continue
            _record_one(
                session,
                letter,
                back=back,
                peppers=peppers,
                agent=agent,
                reason=reason,
                now=now,
                result=result,
            )
    return result


def _record_one(
    session: Session,
    letter: Letter,
    *,
    back: Return,
    peppers: Peppers,
    agent: str,
    reason: str,
    now: Any,
    result: ReturnsResult,
) -> None:
    # The member's row before their codes, as every writer takes them (a batch committing
    # holds its members first: taking a code first could deadlock with it on PostgreSQL).
    member = session.get(Member, letter.member_id, with_for_update=True, populate_existing=True)
    assert member is not None, "a letter's member exists"
    moved = bore_other_address(letter, member, peppers)  # before the return's reason
    # A pseudonymised member may gain no words about them (the print house's are free text).
    why = back.why if member.pseudonymised_at is None else None
    letter.status = LetterStatus.returned
    letter.status_reason = (
        RETURNED_ON.format(agent_time(now), why) if why else RETURNED.format(agent_time(now))
    )
    session.add(letter)
    revoked = revoke_printed(session, [pk(letter)], reason=RevokeReason.returned)
    result.codes_revoked += revoked
    # A pseudonymised member has no address left to flag.
    flagged = not moved and member.pseudonymised_at is None and not undeliverable.is_flagged(member)
    if moved:
        result.address_changed_since.append(letter.id or 0)
    elif flagged:
        undeliverable.flag(member, reason=CAME_BACK.format(letter.id, back.why), now=now)
        session.add(member)
        result.members_flagged += 1
        # The member's other letters in the post go to the same address: they will not
        # arrive either, and their codes must not work wherever they end up.
        result.letters_voided += void_printed(
            session, [pk(member)], moved=False, agent=agent, now=now
        )
    result.returned.append(letter.id or 0)
    audit.record(
        session,
        agent=agent,
        action=AuditAction.letter_returned,
        member=member,
        reason=reason,
        at=now,
        letter_id=letter.id,
        returned_as=why,
        code_revoked=bool(revoked),
        address_flagged=flagged,
        address_changed_since=moved,
    )
