"""The audit log: who did what to which member, why, when, and how it ended.

Append-only and chained (audit_chain/, docs/audit.md): an event is sealed and written when
its transaction commits, and never changed after.
"""

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from cpms_admin.audit_chain.group import EventGroup
from cpms_admin.audit_chain.seal import allocate_ids, append, append_group
from cpms_admin.clock import iso, system_clock
from cpms_admin.db import Page, fetch_page
from cpms_admin.errors import InvalidInput, Refused
from cpms_admin.models import AuditEvent, Member, pk
from cpms_admin.vocabulary import AuditAction

# The agent recorded for what the member does on the portal, and who asked for the codes and
# letters they ask for there (anything else is asked by an agent, or queued by a rule).
PORTAL = "portal"

AGENT_MAX_LENGTH = 100  # AuditEvent.agent is VARCHAR(100) on PostgreSQL
REASON_MAX_LENGTH = 500

# Unicode's categories Cc (controls) and Cf (invisible formatting: bidi overrides that print
# "Martin\u202eLEFEVRE" as MARTINERVEFEL, zero-width spaces that no search finds, BOMs),
# exactly, as of Python 3.11's Unicode 14 (tests/test_member_fields.py checks the list), and
# U+034F, the one invisible mark among the accents a member's name may hold
# (members/postal.py's NOT_LATIN). Refused in member fields and in agents' free text alike.
UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
# What would forge lines in `audit list` besides the controls (C0, DEL, C1): the line and
# paragraph separators; and lone surrogates (undecodable bytes from the environment), which
# PostgreSQL cannot store.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def unprintable(text: str) -> str | None:
    """Why `text` would not print or search as it reads (its first control or invisible
    character, named), or None."""
    found = UNPRINTABLE.search(text)
    if found is None:
        return None
    character = found.group()
    if unicodedata.category(character) == "Cc":
        return "control characters are not allowed"
    name = unicodedata.name(character, "a formatting character")
    return f"invisible characters are not allowed (U+{ord(character):04X}, {name})"


# Invisible characters that do no harm inside visible free text: a soft hyphen pasted from a
# word processor, the joiners of emoji and of Persian, the word joiner, the grapheme joiner.
# The others hide text (tag characters can spell a sentence), or make a row read other than
# it is stored (bidi marks).
_HARMLESS_INSIDE = str.maketrans(dict.fromkeys("\u00ad\u034f\u200c\u200d\u2060"))


def clean_text(value: str, *, what: str, max_length: int) -> str:
    """`value` without its surrounding white space, if it is one line of 1 to `max_length`
    characters with no control character, something visible, and no invisible character
    but the few harmless inside text (`_HARMLESS_INSIDE`): free text that the audit log
    shows as typed (a reason of zero-width spaces would say nothing). Letters of any script,
    accents, apostrophes and spaces are fine. Every kind of white space goes, as an import
    reads a cell: a reason pasted with a non-breaking space at its end would otherwise not
    read back from an export."""
    text = value.strip()
    if not text:
        raise InvalidInput(f"{what} must not be empty")
    if len(text) > max_length or _NOT_ONE_LINE.search(text):
        raise InvalidInput(
            f"{what} must be one line without control characters (at most {max_length} characters)"
        )
    hidden = UNPRINTABLE.search(text.translate(_HARMLESS_INSIDE))
    if hidden is not None or not UNPRINTABLE.sub("", text).strip():
        raise InvalidInput(
            f"{what} must be visible text: {unprintable(hidden[0] if hidden else text)}"
        )
    return text


def clean_name(value: str, *, what: str, max_length: int) -> str:
    """`clean_text` for a name (an agent's, a label): no invisible character at all, so that
    two names that look alike are alike (`ro\u200bot` would pass for `root`)."""
    text = clean_text(value, what=what, max_length=max_length)
    if hidden := unprintable(text):
        raise InvalidInput(f"{what} must be visible text: {hidden}")
    return text


# The label of the command running in this process (`--agent` / `CPMS_AGENT`: a ticket, a
# script's name), recorded beside the agent in every event it writes. Bound by the CLI for the
# length of one command (`labelled`); never an identity, which comes from the system.
_LABEL: ContextVar[str | None] = ContextVar("cpms_audit_label", default=None)


@contextmanager
def labelled(label: str | None) -> Iterator[None]:
    """Record `label` in the events written inside the block."""
    if label is not None:
        label = clean_name(
            label, what="the label (--agent, CPMS_AGENT)", max_length=AGENT_MAX_LENGTH
        )
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


def record(
    session: Session,
    *,
    agent: str,
    action: AuditAction,
    member: Member | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    at: datetime | None = None,
    **details: Any,
) -> AuditEvent:
    """Add an audit event to the caller's transaction (never commits: it lands with the change,
    sealed into the chain at the commit). Agent, action and reason are checked once more here,
    so that no path can write a forged line. The event returned has its id; it is not in the
    session."""
    agent = clean_name(agent, what="the agent name", max_length=AGENT_MAX_LENGTH)
    action = AuditAction(action)  # a word of docs/audit.md, even from a caller mypy never saw
    if reason:
        reason = clean_text(reason, what="the reason", max_length=REASON_MAX_LENGTH)
    (event_id,) = allocate_ids(session, 1)
    event = AuditEvent(
        id=event_id,
        at=at or system_clock(),
        agent=agent,
        label=_LABEL.get(),
        action=action.value,
        member_id=member.id if member else None,
        reason=reason,
        outcome=outcome,
        details=_as_json(details),
    )
    append(session, [event.model_dump()])
    return event


def _as_json(details: Mapping[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    """A detail JSON has no word for, as `audit list` should show it: a moment as ISO text
    with its offset, a set as a sorted list. Anything else (a database row, an object) is a
    mistake of the caller, refused rather than stored as its repr (`"(7,)"`)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(
        f"audit detail of type {type(value).__name__} is not a JSON value: pass plain values"
    )


# The events about an agent rather than a member (agents/registry.py writes them): their
# details name the agent (`name`), and an `agent.add`'s the role given and the one before.
_ON_AN_AGENT = frozenset({AuditAction.agent_add, AuditAction.agent_disable})


@dataclass(frozen=True, slots=True)
class ListedEvent:
    """A line of `audit list`: the event, its member's NIR if it concerns one, and its
    details read."""

    event: AuditEvent
    nir: str | None
    details: Any

    @property
    def agent_changed(self) -> str | None:
        """The agent an event on an agent changed, as `audit list`'s table names it: `bob`,
        and for an `agent.add` the role given (and the state before, when the agent had
        another): `bob (supervisor, was disabled)`. None for any other event. (The JSON
        keeps these in `details`.)"""
        details = self.details if isinstance(self.details, dict) else {}
        name = details.get("name")
        if self.event.action not in _ON_AN_AGENT or not isinstance(name, str):
            return None
        role, before = details.get("role"), details.get("before")
        if self.event.action != AuditAction.agent_add or not role:
            return name
        return (
            f"{name} ({role}, was {before})" if before not in (None, role) else f"{name} ({role})"
        )

    def as_json(self) -> dict[str, Any]:
        event = self.event
        return {
            "id": event.id,
            "at": iso(event.at),
            "agent": event.agent,
            "label": event.label,
            "action": event.action,
            "nir": self.nir,
            "reason": event.reason,
            "outcome": event.outcome,
            "details": self.details,
        }


def list_events(
    session: Session,
    *,
    nir: str | None = None,
    since: datetime | None = None,
    action: str | None = None,
    limit: int | None = 100,
) -> Page:
    """Newest first, as ListedEvent; `limit=None` for all. `nir` is compact, as
    `members.nir.nir_to_find` makes it."""
    query = select(AuditEvent, Member.nir).join(Member, isouter=True)
    if nir is not None:
        query = query.where(Member.nir == nir)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    try:
        found = fetch_page(session, query.order_by(col(AuditEvent.id).desc()), limit)
        events = [
            ListedEvent(event, member_nir, json.loads(event.details)) for event, member_nir in found
        ]
    except (ValueError, TypeError) as exc:  # SQLite keeps any value in any column
        raise Refused(
            f"an audit event holds a value its column cannot ({exc}): the log was edited by "
            "hand; cpms-admin audit verify names the event"
        ) from None
    return Page(events, found.total)


def unrecorded_action(session: Session, action: str) -> str | None:
    """When no event was ever recorded with `action` (a typo in `audit list --action`): a
    line naming the actions closest to it, of the vocabulary and of the log (which may hold
    words an older version wrote). None when some event has it."""
    import difflib

    recorded = set(session.exec(select(AuditEvent.action).distinct()))
    if action in recorded:
        return None
    none_yet = f"no event was ever recorded with the action {action!r}"
    known = {str(word) for word in AuditAction}
    if action in known:
        return none_yet  # not a typo: nothing did it yet
    words = sorted(recorded | known)
    same_but_case = [word for word in words if word.casefold() == action.casefold()]
    close = same_but_case or difflib.get_close_matches(action, words, n=3, cutoff=0.6)
    return none_yet + (f"; did you mean {' or '.join(close)}?" if close else "")


# A bulk run that commits in batches (import, campaign, mail send) in the append-only log: its
# event (outcome `started`, the run's facts) goes in with its first batch; each batch adds one
# event for each member it changed (`record_members`, action `<run's action>.member`, details
# naming the run's event), so that `audit list --nir X` shows the runs that touched X; the run
# ends with a closing event of the same action (`finish`: the counts, the outcome, the run's
# event). A run killed half-way leaves its event, the members' events of the batches it
# committed and no closing event: exactly what it wrote.
STARTED = "started"


class RunAudit:
    def __init__(
        self,
        *,
        agent: str,
        action: AuditAction,
        at: datetime,
        reason: str | None = None,
        **facts: Any,
    ) -> None:
        # Checked here once, as `record` would: the members' events are written without it.
        self._agent = clean_name(agent, what="the agent name", max_length=AGENT_MAX_LENGTH)
        self._action = AuditAction(action)
        self._at = at
        self._reason = (
            clean_text(reason, what="the reason", max_length=REASON_MAX_LENGTH) if reason else None
        )
        self._facts = facts
        self._run_id: int | None = None

    @property
    def agent(self) -> str:
        return self._agent

    @property
    def run_id(self) -> int | None:
        """The id of the run's event, once written."""
        return self._run_id

    def start(self, session: Session, *, outcome: str = STARTED) -> int:
        """Add the run's event to the caller's transaction, the first time; its id. (A batch
        whose transaction fails ends the run, so the id never names an event rolled back.)
        A run whose event says all (a purge category's) gives its `outcome` at once."""
        if self._run_id is None:
            event = record(
                session,
                agent=self._agent,
                action=self._action,
                reason=self._reason,
                outcome=outcome,
                at=self._at,
                **self._facts,
            )
            self._run_id = pk(event)
        return self._run_id

    def finish(
        self,
        session: Session,
        *,
        counts: Mapping[str, int],
        outcome: str,
        at: datetime | None = None,
    ) -> AuditEvent:
        """Add the run's closing event to the caller's transaction: its counts and outcome."""
        details: dict[str, Any] = {"run": self.start(session), **counts}
        return record(
            session,
            agent=self._agent,
            action=self._action,
            reason=self._reason,
            outcome=outcome,
            at=at or self._at,
            **details,
        )

    def record_members(
        self,
        session: Session,
        member_ids: Sequence[int],
        *,
        change: str,
        at: datetime | None = None,
        **details: Any,
    ) -> None:
        """Add one event per member of `member_ids` to the transaction that changes them: the
        run's agent and reason, and as details `{"change": change, "run": <the run's event
        id>}` and `details`, the same for each (the member is known by `member_id`: none of
        their data is copied). Built once and sealed with the batch, so that thousands of
        members cost little."""
        members = sorted(set(member_ids))
        if not members:
            return
        run = self.start(session)
        values = {
            "at": at or self._at,
            "agent": self._agent,
            "label": _LABEL.get(),
            "action": self._action.on_each_member().value,
            "reason": self._reason,
            "outcome": "ok",
            "details": _as_json({"change": change, "run": run, **details}),
        }
        # One group, sealed without a dict per member (audit_chain/group.py).
        append_group(session, EventGroup(values, allocate_ids(session, len(members)), members))
