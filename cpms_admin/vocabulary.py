"""The domain's words, once: statuses, letter kinds, channels, code purposes, the portal's
reasons, the weaknesses of a PIN. Each is a `StrEnum`, so a member compares equal to the
plain string stored in the database and printed in JSON (docs/scripting.md), and Typer
offers the same values as choices. Stored words are named as their values, so no driver can
store one under another spelling; the audit's actions, whose words hold dots, are stored by
their `.value`."""

from enum import StrEnum


class MemberStatus(StrEnum):
    active = "active"
    closed = "closed"


class CodeStatus(StrEnum):
    pending = "pending"  # live until it expires
    used = "used"
    revoked = "revoked"


class RevokeReason(StrEnum):
    """Why a code was revoked before it expired: what `account status` tells the agent of a
    code that no longer works (`revoked_reason`; codes revoked before 0019 have none)."""

    superseded = "superseded"  # the member was given a newer code
    tries_spent = "tries_spent"
    pin_reset = "pin_reset"  # an agent reset the PIN
    member_closed = "member_closed"
    email_changed = "email_changed"  # e-mailed to an address changed since
    mail_failed = "mail_failed"  # the e-mail carrying it could not be sent
    returned = "returned"  # its letter came back undelivered
    address_changed = "address_changed"  # its letter bore an address changed since
    address_flagged = "address_flagged"  # its letter went to an address flagged since
    batch_lost = "batch_lost"  # its printed batch never reached the print house's folder

    @property
    def text(self) -> str:
        return _REVOKE_TEXT[self]


_REVOKE_TEXT = {
    RevokeReason.superseded: "a newer code replaced it",
    RevokeReason.tries_spent: "too many wrong codes were typed at the portal",
    RevokeReason.pin_reset: "an agent reset the PIN",
    RevokeReason.member_closed: "the member was closed",
    RevokeReason.email_changed: "it was e-mailed to an address changed since",
    RevokeReason.mail_failed: "the e-mail carrying it could not be sent",
    RevokeReason.returned: "its letter came back undelivered",
    RevokeReason.address_changed: "its letter bore an address the member has changed since",
    RevokeReason.address_flagged: "its letter went to an address found undeliverable since",
    RevokeReason.batch_lost: "its batch was never handed to the print house",
}


class LetterStatus(StrEnum):
    pending = "pending"  # waiting for the nightly batch
    claimed = "claimed"  # being printed by a running batch
    printed = "printed"
    cancelled = "cancelled"  # no longer needed (see status_reason)
    failed = "failed"  # could not be rendered
    returned = "returned"  # came back undeliverable (NPAI): its code revoked


class CancelReason(StrEnum):
    """Why a letter no longer goes: what `letters batch --dry-run` counts by
    (`cancelled_by_reason`); `text` is the `status_reason` the cancelled letter keeps."""

    member_closed = "member_closed"
    has_pin = "has_pin"  # a welcome letter, but the member has a PIN already
    superseded = "superseded"  # the member has a newer letter
    newer_code = "newer_code"  # the member got a code since the letter was queued
    undeliverable = "undeliverable"  # a letter came back from the address
    address_changed = "address_changed"  # only while printed: it bears the old address

    @property
    def text(self) -> str:
        return _CANCEL_TEXT[self]


_CANCEL_TEXT = {
    CancelReason.member_closed: "member closed",
    CancelReason.has_pin: "welcome letter, but the member already has a PIN",
    CancelReason.superseded: "superseded by a newer letter",
    CancelReason.newer_code: "a newer code was issued after it was queued",
    CancelReason.undeliverable: "the address is flagged undeliverable (a letter came back)",
    CancelReason.address_changed: "the member's address changed",
}


class BatchStatus(StrEnum):
    running = "running"
    completed = "completed"
    abandoned = "abandoned"


class MailStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"  # given up
    cancelled = "cancelled"  # no longer needed


class Channel(StrEnum):
    """How a code reaches the member."""

    email = "email"
    post = "post"


class ChannelChoice(StrEnum):
    """What an agent may ask for: `auto` is e-mail when the member has an address."""

    auto = "auto"
    email = "email"
    post = "post"


class Purpose(StrEnum):
    """What a one-time code is for; also the wording of its e-mail or letter."""

    first_login = "first_login"
    pin_reset = "pin_reset"


class LetterKind(StrEnum):
    welcome = "welcome"  # the enrolment letter
    security_code = "security_code"  # a code asked for (by the member, an agent, a campaign)
    pin_reset = "pin_reset"  # a code after an agent's PIN reset

    def fixed_purpose(self) -> Purpose | None:
        """The purpose of the code this kind always carries; None for a security code,
        whose purpose follows the member's account (`codes.purpose_for`)."""
        return _FIXED_PURPOSE.get(self)

    def wording(self) -> "Wording":
        """What a letter of this kind says when nothing else decides (`Wording.of_letter`)."""
        return Wording(_KIND_WORDING[self])


_KIND_WORDING = {
    LetterKind.welcome: "first_access",
    LetterKind.security_code: "requested_code",
    LetterKind.pin_reset: "pin_reset",
}
_FIXED_PURPOSE = {LetterKind.welcome: Purpose.first_login, LetterKind.pin_reset: Purpose.pin_reset}


class Wording(StrEnum):
    """Why a letter was sent, as it tells the member (templates/letters/<wording>.html)."""

    first_access = "first_access"  # enrolment, or a campaign to members never logged in
    requested_code = "requested_code"  # the member (portal) or an agent asked for a code
    pin_reset = "pin_reset"  # an agent reset the PIN
    migration = "migration"  # a campaign moving members to the new portal

    @classmethod
    def of_letter(cls, kind: str, requested_by: str | None, chosen: str | None) -> "Wording":
        """The wording of a queued letter: what its campaign `chosen`, else its kind's, save
        that a security code no one asked for (`requested_by` None) is a campaign's."""
        if chosen is not None:
            return cls(chosen)
        if kind == LetterKind.security_code and requested_by is None:
            return cls.first_access
        return LetterKind(kind).wording()


class Asker(StrEnum):
    """Who asked for a code, as its e-mail tells the member."""

    member = "member"  # on the portal ("Obtenir mon code de sécurité")
    agent = "agent"  # an agent, for the member (who called, wrote, came in)
    cpms = "cpms"  # nobody by name: a campaign's code


class ActedBy(StrEnum):
    """Who acted, as a member's dossier says it: never an agent's name."""

    portal = "portal"  # the member themselves
    cpms = "cpms"  # an agent or a rule


class CampaignWording(StrEnum):
    """What a `code campaign` letter may say."""

    first_access = "first_access"
    migration = "migration"


class OnConflict(StrEnum):
    """What `members import` does with a row whose member is already there."""

    skip = "skip"  # leave the member as they are
    update = "update"  # take the row's values
    fail = "fail"  # import nothing when any member is already there


class AccountState(StrEnum):
    """Where an account stands, as `account status` and `member show` say it."""

    active = "active"
    cooldown = "cooldown"  # must wait before the next attempt
    locked = "locked"  # hard lock: an agent must step in
    no_pin = "no_pin"  # never personalised, or reset by an agent


class Blocked(StrEnum):
    """Why an attempt is refused before the PIN is even looked at."""

    locked = "locked"  # hard lock: an agent must unlock it
    cooldown = "cooldown"
    captcha_required = "captcha_required"


class PortalReason(StrEnum):
    """The internal `reason` of a portal answer (docs/scripting.md), for the back office and QA
    only."""

    ok = "ok"
    wrong_pin = "wrong_pin"
    no_pin = "no_pin"
    closed = "closed"
    unknown_member = "unknown_member"
    locked = "locked"
    cooldown = "cooldown"
    captcha_required = "captcha_required"
    wrong_code = "wrong_code"
    dead_code = "dead_code"
    code_used = "code_used"  # the member's code, typed again after it set their PIN
    mismatch = "mismatch"
    weak_pin = "weak_pin"
    rate_limited = "rate_limited"
    on_its_way = "on_its_way"
    undeliverable = "undeliverable"  # by post only, and a letter came back from the address


class PinSecret(StrEnum):
    """What the secret typed to set a PIN is (`portal set-pin --with`): the portal knows which
    form the member filled in."""

    auto = "auto"  # QA: the code when the member has a live one, else the current PIN
    code = "code"  # the one-time code
    pin = "pin"  # the current PIN


class PinChange(StrEnum):
    """How a PIN came to change, as its audit event and the member's notice e-mail say."""

    set = "set"  # a first PIN, with a first-login code
    reset = "reset"  # a new PIN with a code, after a reset or a forgotten PIN
    changed = "changed"  # a new PIN with the current one


class PinWeakness(StrEnum):
    """Why a PIN is refused as too easy to guess; the value is the agent's sentence."""

    repeated_digit = "the PIN is one digit repeated"
    consecutive = "the PIN is a run of consecutive digits"
    repeated_group = "the PIN repeats a group of 2 or 3 digits"
    nearly_one_digit = "the PIN is one digit repeated but for one"
    doubled_digits = "the PIN is three doubled digits"
    counting_pairs = "the PIN counts in pairs of digits (01 02 03)"
    keypad_lines = "the PIN follows two lines of the keypad"
    common = "the PIN is on the list of common PINs"
    birth_date = "the PIN is made of the birth year and month in the NIR"


class RetentionCategory(StrEnum):
    """What `purge` drops, each past its own retention period (privacy/purge.py)."""

    unknown_nir_counters = "unknown_nir_counters"  # failure counters of NIRs no member has
    code_requests = "code_requests"  # the portal's code request log (24 hours)
    mail_files = "mail_files"  # `.eml` files in CPMS_MAIL_DIR
    batch_files = "batch_files"  # a printed letters batch's files and stored manifest
    closed_members = "closed_members"  # closed members' personal data (pseudonymised)
    audit_events = "audit_events"  # archived, then dropped


class RetentionAction(StrEnum):
    """What `purge` does to a category's items."""

    delete = "delete"
    pseudonymise = "pseudonymise"
    archive = "archive"


class AuditAction(StrEnum):
    """What an audit event records (its `action`, docs/audit.md#the-actions). Named as their
    values with `_` for `.`; a bulk run's events on each member it changed add `.member`."""

    # An agent, on one member
    member_add = "member.add"
    member_update = "member.update"
    member_close = "member.close"
    member_dossier = "member.dossier"
    account_unlock = "account.unlock"
    pin_reset = "pin.reset"
    code_issue = "code.issue"
    code_revoke = "code.revoke"
    letter_cancel = "letter.cancel"
    letter_returned = "letter.returned"
    # The portal, for the member
    portal_login = "portal.login"
    portal_request_code = "portal.request_code"
    portal_send_code = "portal.send_code"
    portal_set_pin = "portal.set_pin"
    portal_change_pin = "portal.change_pin"
    portal_accept_terms = "portal.accept_terms"
    # The nightly batch
    letters_batch = "letters.batch"
    letters_batch_abandoned = "letters.batch_abandoned"
    letter_failed = "letter.failed"
    letter_void = "letter.void"
    # Bulk runs, and their events on each member
    members_import = "members.import"
    members_import_member = "members.import.member"
    members_export = "members.export"
    code_campaign = "code.campaign"
    code_campaign_member = "code.campaign.member"
    mail_send = "mail.send"
    mail_send_member = "mail.send.member"
    pins_seal_imported = "pins.seal_imported"
    pins_seal_imported_member = "pins.seal_imported.member"
    # Administration
    agent_add = "agent.add"
    agent_disable = "agent.disable"
    db_upgrade = "db.upgrade"
    pepper_record = "pepper.record"
    pepper_rotate = "pepper.rotate"
    audit_archive = "audit.archive"
    # `purge`: one event per category run (RetentionCategory)
    purge_unknown_nir_counters = "purge.unknown_nir_counters"
    purge_code_requests = "purge.code_requests"
    purge_mail_files = "purge.mail_files"
    purge_batch_files = "purge.batch_files"
    purge_closed_members = "purge.closed_members"
    purge_closed_members_member = "purge.closed_members.member"
    purge_audit_events = "purge.audit_events"

    @classmethod
    def purge(cls, category: "RetentionCategory") -> "AuditAction":
        return cls(f"purge.{category}")

    def on_each_member(self) -> "AuditAction":
        """The action of a bulk run's events on the members it changed."""
        return AuditAction(f"{self}.member")


class ChainProblem(StrEnum):
    """What `audit verify` found wrong with the audit chain (its `problem`, docs/audit.md)."""

    changed = "changed"  # an event no longer matches its hash
    deleted = "deleted"  # a place of the chain is empty: its event is gone
    inserted = "inserted"  # an event the chain never sealed there (no seq, past the head...)
    out_of_order = "out_of_order"  # sealed after another event than the one now before it
    head_changed = "head_changed"  # the head (last seq and hash, anchor) does not match its seal
    unsealed = "unsealed"  # events from before the chain wait for `db upgrade` to seal them
