"""`account status`: why a member can or cannot log in, in plain words, with the command
that fixes it. Read-only.

What it says of a waiting letter is what the next print run will do with it: the batch's own
rules (`letters.claim.moot_reasons`) tell a letter it will print from one it will cancel."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.clock import Clock, iso
from cpms_admin.credentials import codes
from cpms_admin.credentials.lockout import account_state, attempts_left, seconds_until
from cpms_admin.credentials.pins import LEGACY_PREFIX
from cpms_admin.english import agree, count
from cpms_admin.french import agent_time
from cpms_admin.letters.claim import PendingLetter, as_waiting
from cpms_admin.letters.queue import letters_of
from cpms_admin.members import undeliverable
from cpms_admin.members.records import get_account, get_member
from cpms_admin.models import Account, Letter, Member, OutgoingMail, SecurityCode, pk
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import (
    AccountState,
    Channel,
    CodeStatus,
    LetterStatus,
    MailStatus,
    MemberStatus,
    RevokeReason,
)

REASON = '--reason "..."'


@dataclass(frozen=True)
class AccountStatus:
    """`account status`: the account's state and counters, what is in flight, and the
    diagnosis with the command that fixes its first finding."""

    member: Member
    account: Account
    state: AccountState
    code: SecurityCode | None  # the live code, if any
    code_tries_left: int
    pending_letters: list[PendingLetter]
    letters_in_print: Sequence[Letter]  # their codes work once their batch ends
    queued_emails: Sequence[OutgoingMail]  # a campaign's, waiting for `mail send`
    # `unprintable_letter`: the latest letter failed, and the address still cannot be
    # printed (why)
    unprintable: tuple[Letter, str] | None = None
    # The account is hard-locked and no agent asked for the live code since: the portal
    # refuses it while the lock holds (`codes.opens_hard_lock`).
    code_before_lock: bool = False
    # The member's newest code when it opens nothing (its tries spent, expired or revoked)
    # and no PIN was set since it was made: the letter or e-mail that carries it is useless.
    dead_code: SecurityCode | None = None
    diagnosis: list[str] = field(default_factory=list)
    fix: str | None = None

    @property
    def pin_legacy(self) -> bool:
        pin_hash = self.account.pin_hash
        return bool(pin_hash and pin_hash.startswith(LEGACY_PREFIX))

    def as_json(self) -> dict[str, Any]:
        member, account, code = self.member, self.account, self.code
        return {
            "nir": member.nir,
            "status": member.status,
            "state": self.state,
            "pin_set": account.pin_hash is not None,
            "pin_legacy": self.pin_legacy,
            "pin_set_at": iso(account.pin_set_at),
            "failed_attempts": account.failed_attempts,
            "locked_until": iso(account.locked_until),
            "captcha_required": account.captcha_required,
            "hard_locked_at": iso(account.hard_locked_at),
            "last_login_at": iso(account.last_login_at),
            "terms_accepted_version": account.terms_accepted_version,
            "email_known": member.email is not None,
            "address_undeliverable": undeliverable.view(member),
            "pending_code": None
            if code is None
            else {
                "purpose": code.purpose,
                "channel": code.channel,
                "expires_at": iso(code.expires_at),
                "tries_left": self.code_tries_left,
            },
            "pending_letters": [waiting.as_json() for waiting in self.pending_letters],
            "letters_in_print": [
                {"id": letter.id, "kind": letter.kind, "batch_id": letter.batch_id}
                for letter in self.letters_in_print
            ],
            "queued_emails": [
                {"id": mail.id, "purpose": mail.purpose, "created_at": iso(mail.created_at)}
                for mail in self.queued_emails
            ],
            "unprintable_letter": None
            if self.unprintable is None
            else {
                "id": self.unprintable[0].id,
                "kind": self.unprintable[0].kind,
                "reason": self.unprintable[1],
            },
            "diagnosis": self.diagnosis,
            "fix": self.fix,
        }


def account_status(
    session: Session, *, nir: str, settings: Settings, clock: Clock
) -> AccountStatus:
    """The account's state and counters, what is in flight, and the diagnosis."""
    member = get_member(session, nir)
    account = get_account(session, member)
    now = clock()
    code = codes.live_code(session, member_id=pk(member), now=now)
    status = AccountStatus(
        member,
        account,
        account_state(account, now),
        code,
        max(settings.code_max_tries - code.failed_tries, 0) if code else 0,
        as_waiting(session, letters_of(session, member_id=pk(member)), now=now),
        letters_of(session, member_id=pk(member), status=LetterStatus.claimed),
        _queued_emails(session, pk(member)),
        _unprintable_letter(session, member),
        code_before_lock=code is not None
        and account.hard_locked_at is not None
        and not codes.opens_hard_lock(session, code, account.hard_locked_at),
        dead_code=None if code else _dead_code(session, account),
    )
    findings, fix = diagnose(status, settings=settings, now=now)
    return replace(status, diagnosis=findings, fix=fix)


def _dead_code(session: Session, account: Account) -> SecurityCode | None:
    """Asked when the member has no live code: their newest one, then, is used or dead."""
    newest = codes.newest_code(session, member_id=account.member_id)
    if newest is None or newest.status == CodeStatus.used:
        return None
    if account.pin_set_at is not None and account.pin_set_at >= newest.created_at:
        return None  # a PIN set since: the member no longer needs it
    return newest


def _dead_code_finding(code: SecurityCode, settings: Settings) -> str:
    """Why the member's newest code opens nothing, and where it is (a letter in the post)."""
    if code.failed_tries >= settings.code_max_tries:
        why = f"{count(code.failed_tries, 'wrong code')} typed at the portal spent it"
    elif code.status == CodeStatus.pending:
        why = f"it expired {agent_time(code.expires_at)}"
    elif code.revoked_reason in set(RevokeReason):
        why = f"it was revoked: {RevokeReason(code.revoked_reason).text}"
    else:  # revoked before its reason was kept (0019), or for one a newer release wrote
        why = "it was revoked (an address or e-mail changed, a letter came back, an agent)"
    if code.channel == Channel.post:
        return (
            f"The code in letter #{code.letter_id} ({code.purpose}, printed "
            f"{agent_time(code.created_at)}) no longer works: {why}."
        )
    return f"The {code.purpose} code e-mailed {agent_time(code.created_at)} no longer works: {why}."


def _queued_emails(session: Session, member_id: int) -> Sequence[OutgoingMail]:
    return session.exec(
        select(OutgoingMail)
        .where(OutgoingMail.member_id == member_id, OutgoingMail.status == MailStatus.pending)
        .order_by(col(OutgoingMail.id))
    ).all()


def _unprintable_letter(session: Session, member: Member) -> tuple[Letter, str] | None:
    """The member's latest letter, if the batch could not lay it out, and why the address
    as it is now still cannot be printed: a letter sent there now would fail the same way.
    (The address is measured only then: it loads the letters' font.)"""
    latest = session.exec(
        select(Letter).where(Letter.member_id == pk(member)).order_by(col(Letter.id).desc())
    ).first()
    if latest is None or latest.status != LetterStatus.failed:
        return None
    from cpms_admin.letters.views import why_unprintable

    why = why_unprintable(member)
    return None if why is None else (latest, why)


# What a code nobody asked for since a hard lock comes to (`codes.opens_hard_lock`).
_LOCKED_OUT = "it opens nothing while the lock holds (only a code an agent sends since does)"


def _in_flight(status: AccountStatus) -> str | None:
    """What is on its way to the member: the first thing that gets them in (on a hard-locked
    account, only what an agent asked for since the lock does), else the first thing, said
    to open nothing."""
    on_its_way = list(_on_its_way(status))
    opening = [what for what, opens in on_its_way if opens]
    if opening:
        return opening[0]
    return f"{on_its_way[0][0]}; {_LOCKED_OUT}" if on_its_way else None


def _on_its_way(status: AccountStatus) -> Iterator[tuple[str, bool]]:
    """Each code or letter on its way, in the order the member would get it, and whether it
    would let them in."""
    code, locked_at = status.code, status.account.hard_locked_at
    if code is not None:
        by = "e-mail" if code.channel == Channel.email else "post"
        sent = f"a {code.purpose} code sent by {by} is valid until {agent_time(code.expires_at)}"
        if status.code_before_lock:
            yield sent, False
        else:
            tries = count(status.code_tries_left, "try", "tries")
            yield f"{sent} ({tries} left): setting a PIN with it lets the member log in", True

    def opens(letter: Letter) -> bool:
        return locked_at is None or codes.letter_opens_hard_lock(letter, locked_at)

    for letter in status.letters_in_print:
        yield (
            (
                f"letter #{letter.id} ({letter.kind}) is being printed by batch "
                f"{letter.batch_id}: its code works once the batch ends"
            ),
            opens(letter),
        )
    for waiting in status.pending_letters:
        if waiting.moot is None:
            letter = waiting.letter
            said = f"letter #{letter.id} ({letter.kind}) with a code waits for the next print run"
            yield said, opens(letter)
    for mail in status.queued_emails:  # a campaign's code: nobody asked for it by name
        yield (
            (
                f"a {mail.purpose} code e-mail (queued {agent_time(mail.created_at)}) waits for "
                "the next `mail send`"
            ),
            locked_at is None,
        )


def diagnose(
    status: AccountStatus, *, settings: Settings, now: datetime
) -> tuple[list[str], str | None]:
    """Plain-language findings, most important first, and the command that fixes the first."""
    member = status.member
    in_flight = _in_flight(status)
    finding, fix = _why(status, in_flight=in_flight, settings=settings, now=now)
    if member.status == MemberStatus.closed:  # no code goes to them, by any channel
        return [finding], fix
    findings = [finding]
    if status.dead_code is not None:
        findings.append(_dead_code_finding(status.dead_code, settings))
    if in_flight is not None and status.state != AccountState.no_pin:
        findings.append(f"In flight: {in_flight}.")
    findings += [
        f"Letter #{waiting.letter.id} ({waiting.letter.kind}) will be cancelled by the next "
        f"print run: {waiting.moot}."
        for waiting in status.pending_letters
        if waiting.moot is not None
    ]
    if status.pin_legacy:
        findings.append(
            "PIN carried over from the previous system: upgraded at the next successful login."
        )
    if not member.email:
        findings.append(
            "No e-mail address: codes go by post (48 hours to a week, as the portal tells "
            "the member)."
        )
    if undeliverable.is_flagged(member):  # a returned letter: no code can go by post
        flagged = undeliverable.describe(member)
        findings.insert(
            1,
            f"{flagged[:1].upper()}{flagged[1:]}; no letter is sent there until an agent "
            "updates it.",
        )
        fix = fix if member.email else undeliverable.fix(member)
    if status.unprintable is not None:
        failed, why = status.unprintable
        findings.insert(
            1,
            f"Letter #{failed.id} ({failed.kind}) could not be printed, and a letter to the "
            f"address as it is now would fail the same way: {why}.",
        )
    return findings, fix


def _send_code(status: AccountStatus) -> str:
    """The command that gets the member a code: by post when the last code's e-mail could
    not be sent (the same address would refuse it again), and the address first when a
    letter to it cannot be printed."""
    nir = status.member.nir
    dead = status.dead_code
    mail_failed = dead is not None and dead.revoked_reason == RevokeReason.mail_failed
    if status.unprintable is None and mail_failed and not undeliverable.is_flagged(status.member):
        return f"cpms-admin code issue {nir} --channel post {REASON}"
    if status.unprintable is None or status.member.email:
        return f"cpms-admin code issue {nir} --channel auto {REASON}"
    return (
        f"cpms-admin member update {nir} with shorter lines (--street, "
        "--address-complement, --address-building, --locality; --envelope-name for the name "
        f"line), then cpms-admin code issue {nir} --channel post {REASON}"
    )


def _why(
    status: AccountStatus, *, in_flight: str | None, settings: Settings, now: datetime
) -> tuple[str, str | None]:
    """The main finding about the account, and the command that fixes it (if any)."""
    member, account, state = status.member, status.account, status.state
    nir, failures = member.nir, account.failed_attempts
    unlock = f"cpms-admin account unlock {nir} {REASON}"
    send_code = _send_code(status)
    # Unlocked, a member without a PIN or a code on its way still cannot log in: the code is
    # what they need (it lifts a hard lock too, once they set a PIN with it).
    nothing_to_log_in_with = account.pin_hash is None and in_flight is None
    no_pin = (
        " The member has no PIN and no code on its way: send one." if nothing_to_log_in_with else ""
    )
    if member.status == MemberStatus.closed:
        when = agent_time(member.closed_at) or "an unknown date"
        return f"Member closed on {when} ({member.closed_reason}): cannot log in.", None
    if state == AccountState.locked:
        return (
            f"Locked after {count(failures, 'failed attempt')} on "
            f"{agent_time(account.hard_locked_at)}: "
            "the portal refuses every PIN and code, and sends no code, until an agent "
            "unlocks the account or sends a code (code issue, pin reset) with which the "
            f"member sets a new PIN.{no_pin}"
        ), send_code if nothing_to_log_in_with else unlock
    if state == AccountState.cooldown:
        wait = seconds_until(account.locked_until, now)
        left = attempts_left(failures, settings)
        return (
            f"Cooling down after {count(failures, 'failed attempt')}: the portal refuses "
            f"attempts until {agent_time(account.locked_until)} ({wait} s), then asks for a "
            "CAPTCHA; "
            f"{count(left, 'more failure')} {agree(left, 'locks', 'lock')} the account.{no_pin}"
        ), send_code if nothing_to_log_in_with else unlock
    # Failures short of a lock count for a code as for a PIN (the account's one budget).
    counted = (
        f"{count(failures, 'failed attempt')} since the last success"
        f"{', the portal asks for a CAPTCHA' if account.captcha_required else ''}; "
        f"{attempts_left(failures, settings)} left before {_next_step(failures, settings)}"
    )
    if state == AccountState.no_pin:
        if in_flight is None:
            also = f" {counted[:1].upper()}{counted[1:]}." if failures else ""
            return f"No PIN and no code on its way: the member cannot log in.{also}", send_code
        since = "since a reset" if account.pin_set_at else "yet"
        if failures:  # the code's own tries aside, the account's budget runs out first
            return f"No PIN {since}; {in_flight}; but {counted}.", unlock
        return f"No PIN {since}; {in_flight}.", None
    if failures:
        return f"Active; {counted}.", unlock
    last = agent_time(account.last_login_at) or "never"
    return (
        f"No problem found: the account is active (last login {last}). If the member "
        "still cannot log in, check the NIR they type and that the PIN has 6 digits; "
        f"if the PIN is forgotten, reset it (cpms-admin pin reset {nir} --channel auto "
        '--reason "...").'
    ), None  # nothing to fix: a reset would take a working PIN away


def _next_step(failures: int, settings: Settings) -> str:
    """What the attempts left count down to (`lockout.attempts_left`)."""
    if failures < settings.lockout_max_failures < settings.lockout_hard_after:
        return "the cool-down"
    return "the hard lock"
