"""The tables. Plain SQLModel classes: rules live in the services, not here.

Timestamps are aware UTC (see `clock.py`). Secrets are only ever stored as hashes:
`Account.pin_hash` (argon2id PHC string, or a legacy hash until the first login) and
`SecurityCode.code_hash` (keyed HMAC).
"""

from datetime import date, datetime

from sqlalchemy import BigInteger, Index, String
from sqlmodel import Field, SQLModel

from cpms_admin.clock import system_clock
from cpms_admin.vocabulary import BatchStatus, CodeStatus, LetterStatus, MailStatus, MemberStatus

# The condition of the closed members' index: a query is served by it when it states both
# terms, the status as a literal (`db.stated`). Pseudonymised members leave it: no listing
# shows them, and the retention job looks for the closed members not pseudonymised yet.
CLOSED_MEMBERS = f"status = '{MemberStatus.closed}' AND pseudonymised_at IS NULL"


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of only the rows `where` holds, as the migrations make it on both engines.

    The condition is kept in `info`, not in SQLAlchemy's `postgresql_where`: naming that
    keyword loads the PostgreSQL dialect on every start, SQLite included (about a sixth of a
    command's start-up), and the schema is the migrations' to make anyway. A test checks the
    condition of each such index of the migrated database against this one."""
    return Index(name, *columns, info={"where": where})


class TableModel(SQLModel):
    """The tables' base: pydantic builds a table's validator on its first use, not when the
    class is made (a sixth of importing the tables, which every command pays on start-up).
    The services make rows by keyword and never validate them; `model_dump` builds it."""

    model_config = SQLModel.model_config | {"defer_build": True}


class Member(TableModel, table=True):
    # `member list` walks this index in order; id breaks ties between namesakes. The closed
    # members, a few in a hundred, have their own, so `--status closed`, `members export
    # --status closed` and the retention job find them without reading the others; the
    # active ones are listed through the first, and no member written pays for a third index
    # (migration 0014).
    __table_args__ = (
        Index("ix_member_sort_name", "sort_name", "id"),
        partial_index("ix_member_closed_sort_name", "sort_name", "id", where=CLOSED_MEMBERS),
    )

    id: int | None = Field(default=None, primary_key=True)
    nir: str = Field(max_length=15, unique=True, index=True)
    civility: str | None = Field(default=None, max_length=3)
    last_name: str = Field(max_length=100)
    first_name: str = Field(max_length=100)
    birth_date: date | None = None
    email: str | None = Field(default=None, max_length=254)
    # The AFNOR lines' fields, as typed: the printed lines are derived (members/postal.py).
    street: str = Field(max_length=100)
    address_complement: str | None = Field(default=None, max_length=100)
    address_building: str | None = Field(default=None, max_length=100)
    locality: str | None = Field(default=None, max_length=100)
    postcode: str = Field(max_length=10)
    city: str = Field(max_length=100)
    country: str = Field(default="FR", max_length=2)
    envelope_name: str | None = Field(default=None, max_length=38)  # line 1, when set by hand
    # Folded copies of the searchable fields and of the name (members/search.py), so search
    # and sort behave the same on SQLite and PostgreSQL. The sort key is compared byte by
    # byte on both: SQLite's BINARY, PostgreSQL's "C" (a locale's order would differ).
    search_text: str = Field(default="", max_length=600)
    sort_name: str = Field(
        default="",
        sa_type=String(250).with_variant(String(250, collation="C"), "postgresql"),
        sa_column_kwargs={"server_default": ""},
    )
    status: str = Field(default=MemberStatus.active, max_length=10)
    closed_reason: str | None = None
    closed_at: datetime | None = None
    created_at: datetime = Field(default_factory=system_clock)
    updated_at: datetime = Field(default_factory=system_clock)
    imported_at: datetime | None = Field(default=None, index=True)
    # When an address field last changed (None: before migration 0007), and the flag a
    # returned letter (NPAI) sets: no letter goes to the address until an agent updates it.
    address_changed_at: datetime | None = None
    undeliverable_at: datetime | None = None
    undeliverable_reason: str | None = Field(default=None, max_length=300)
    # When `purge` replaced the personal data of this closed member (privacy/pseudonymise.py):
    # the row stays, so that the audit events naming its id still tell (and verify) its story.
    pseudonymised_at: datetime | None = None


class Account(TableModel, table=True):
    # `member list --locked` finds the few locked accounts of a million through these
    # (views.locked_accounts); they hold only the accounts with the column set.
    __table_args__ = (
        partial_index(
            "ix_account_hard_locked_at",
            "hard_locked_at",
            "member_id",
            where="hard_locked_at IS NOT NULL",
        ),
        partial_index(
            "ix_account_locked_until", "locked_until", "member_id", where="locked_until IS NOT NULL"
        ),
    )

    member_id: int = Field(foreign_key="member.id", primary_key=True)
    pin_hash: str | None = Field(default=None, max_length=255)
    pin_set_at: datetime | None = None
    failed_attempts: int = 0
    locked_until: datetime | None = None  # end of the current cool-down
    captcha_required: bool = False
    hard_locked_at: datetime | None = None
    terms_accepted_version: str | None = Field(default=None, max_length=20)
    terms_accepted_at: datetime | None = None
    last_login_at: datetime | None = None


class UnknownLogin(TableModel, table=True):
    """Failure counters for NIRs that are not members, so the portal treats them exactly like
    a member's account (same cool-down, CAPTCHA and lock) without revealing who is a member.
    Keyed by a keyed hash of the NIR: the table does not list the NIRs people tried."""

    __tablename__ = "unknown_login"

    subject: str = Field(primary_key=True, max_length=80)  # tagged, as unknown_nir.py says
    failed_attempts: int = 0
    locked_until: datetime | None = None
    captcha_required: bool = False
    hard_locked_at: datetime | None = None
    last_attempt_at: datetime = Field(default_factory=system_clock, index=True)


class SecurityCode(TableModel, table=True):
    __tablename__ = "security_code"

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    purpose: str = Field(max_length=20)  # first_login | pin_reset
    channel: str = Field(max_length=10)  # email | post
    code_hash: str = Field(max_length=128)
    status: str = Field(default=CodeStatus.pending, max_length=10, index=True)
    revoked_reason: str | None = Field(default=None, max_length=20)  # a RevokeReason
    failed_tries: int = 0
    created_at: datetime = Field(default_factory=system_clock)
    expires_at: datetime
    used_at: datetime | None = None
    letter_id: int | None = Field(default=None, foreign_key="letter.id")
    # As for its letter: the agent who asked for it by name, "portal", or None (a rule). Only
    # an agent's code may be tried on a hard-locked account.
    requested_by: str | None = Field(default=None, max_length=100)


class LetterBatch(TableModel, table=True):
    __tablename__ = "letter_batch"

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default=BatchStatus.running, max_length=12, index=True)
    owner: str = Field(max_length=200)
    out_dir: str = Field(max_length=1000)
    started_at: datetime = Field(default_factory=system_clock)
    finished_at: datetime | None = None
    letter_count: int = 0
    manifest: str | None = None  # the manifest.json document, once completed
    published_at: datetime | None = None  # once its directory has its final name


class Letter(TableModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(max_length=20)  # welcome | security_code | pin_reset
    purpose: str = Field(max_length=20)  # purpose of the code it will carry
    status: str = Field(default=LetterStatus.pending, max_length=10, index=True)
    created_at: datetime = Field(default_factory=system_clock)
    batch_id: int | None = Field(default=None, foreign_key="letter_batch.id", index=True)
    printed_at: datetime | None = None
    # A keyed digest of the address lines it was printed with (letters/voiding.py): a letter
    # that comes back says the address is undeliverable only if the member still has it.
    address_digest: str | None = Field(default=None, max_length=100)
    status_reason: str | None = None
    # The agent who asked for it by name, "portal" for the member's own request, None for a
    # letter queued by a rule (enrolment, campaign). An agent's letter is always printed.
    requested_by: str | None = Field(default=None, max_length=100)
    # The wording its campaign chose (`Wording`); None: the kind and `requested_by` decide.
    wording: str | None = Field(default=None, max_length=20)


class OutgoingMail(TableModel, table=True):
    """An e-mail waiting for `mail send`; its code is made at send time, never stored clear."""

    __tablename__ = "outgoing_mail"

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(max_length=20)
    purpose: str = Field(max_length=20)
    # pending | sent | failed (given up) | cancelled (no longer needed)
    status: str = Field(default=MailStatus.pending, max_length=10, index=True)
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=system_clock)
    sent_at: datetime | None = None
    # The code made for it by the last attempt: a run killed before marking the e-mail sent
    # leaves it live, and the next run must not take it for another code on its way.
    code_id: int | None = Field(default=None, foreign_key="security_code.id")


class CodeRequest(TableModel, table=True):
    """A portal request for a code, kept 24 hours for the per-NIR rate limit. Keyed by a
    keyed hash of the NIR (`unknown_nir.request_key`), members and unknown NIRs alike, so
    it lists no NIR."""

    __tablename__ = "code_request"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=64, index=True)
    at: datetime = Field(index=True)
    counted: bool  # admitted (not refused by the rate limit itself): counts towards it


class AuditEvent(TableModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=system_clock, index=True)
    agent: str = Field(max_length=100)  # who, as the system says (agents/identity.py)
    label: str | None = Field(default=None, max_length=100)  # --agent: a ticket, a script
    action: str = Field(max_length=50, index=True)
    member_id: int | None = Field(default=None, foreign_key="member.id", index=True)
    reason: str | None = None
    outcome: str = Field(default="ok", max_length=30)
    details: str = "{}"  # JSON object of non-secret facts
    # The chain (audit_chain/, docs/audit.md): the event's place, the hash of the one before
    # it, its own hash (HMAC-SHA256 over every other column) and the pepper whose key made it.
    # Set when the event is written; None only on events from before the chain (migration
    # 0011) that `db upgrade` has not sealed yet. No column may get a server default: its
    # value must be known when the event is sealed.
    seq: int | None = Field(default=None, sa_type=BigInteger, unique=True, index=True)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)
    key_id: int | None = None


class AuditChain(TableModel, table=True):
    """The chain's one row: where it ends (the last event's seq and hash) and where it starts
    (the anchor: the seq and hash of the last event archived, 0 and zeros before any), sealed
    by a MAC so that it cannot be moved back or forward without the key."""

    __tablename__ = "audit_chain"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(sa_type=BigInteger)
    hash: str = Field(max_length=64)
    anchor_seq: int = Field(sa_type=BigInteger)
    anchor_hash: str = Field(max_length=64)
    # Events up to this id predate the chain and wait to be sealed (by `db upgrade`, or the
    # next event written); None once they are.
    legacy_max_id: int | None = None
    key_id: int | None = None
    mac: str | None = Field(default=None, max_length=64)  # None only as migration 0011 left it


class Agent(TableModel, table=True):
    """Someone (or a service) allowed to run commands: the OS user on SQLite, the database
    login role on PostgreSQL, and the role that decides which commands (agents/roles.py)."""

    name: str = Field(primary_key=True, max_length=100)
    role: str = Field(max_length=20)
    added_at: datetime = Field(default_factory=system_clock)
    added_by: str = Field(max_length=100)
    disabled_at: datetime | None = None
    disabled_reason: str | None = None


class PepperKey(TableModel, table=True):
    """What the database knows of each pepper its hashes were made with: the fingerprint
    (a keyed hash, never the pepper), recorded when it was first used or rotated in."""

    __tablename__ = "pepper_key"

    id: int = Field(primary_key=True)  # the id each hash records; the highest is current
    fingerprint: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=system_clock)


def pk(row: Member | Letter | LetterBatch | SecurityCode | OutgoingMail | AuditEvent) -> int:
    """The primary key of a row that has been flushed (typed as int, not int | None)."""
    assert row.id is not None, f"{type(row).__name__} not flushed yet"
    return row.id
