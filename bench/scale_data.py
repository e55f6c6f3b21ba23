"""The rows of bench/scale.py's national-scale databases, made in Python (deterministic).

A member base as a mutual holds it after three years: N members (French names with their
accents, particles and hyphens; the big cities and the communes of the postcode base), a
third without e-mail, 3 % closed, most imported; accounts (55 % with a PIN, expired cool-downs,
0.3 % hard-locked); the letters printed so far (a welcome letter each, some PIN resets) and
their used codes; N/10 letters waiting for tonight's batch, about 1 % of them moot (a welcome
letter to a member who has a PIN, a letter superseded by a newer one, a code used since, a
closed member); and 5N audit events: the import runs, then portal log-ins, codes, campaigns,
agents' work, spread over the years in time order, some members far busier than others.

Member 1 is the probe every timed command asks about: Jean Dupont of Lyon, hard-locked, a PIN
reset letter waiting, PROBE_EVENTS events in the log. A base of one member is the probe alone
(the start-up floor of bench/scale.py runs the same commands on it).
"""

import gzip
import hashlib
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from search import CITIES, FIRST, LAST

from cpms_admin.members.search import SEARCH_COLUMNS, fold, folded_columns

Row = dict[str, Any]
BATCH = 20_000
PROBE_EVENTS = 150  # the probe's events: 3 pages of `audit list`
PIN_HASH = "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0MTIzNA$" + "A" * 43  # never checked
POSTCODES = Path(__file__).resolve().parent.parent / "cpms_admin" / "data" / "postcodes.tsv.gz"
STREETS = (
    "rue de la République", "avenue Jean Jaurès", "place du Marché", "chemin des Vignes",
    "boulevard Victor Hugo", "impasse des Lilas", "allée des Tilleuls", "rue Pasteur",
    "rue Gambetta", "route de Saint-Jean", "quai de la Loire", "rue de l'Église",
)  # fmt: skip
DOMAINS = ("exemple.fr", "courriel.fr", "laposte.net", "orange.fr", "free.fr")
AGENTS = ("alice", "bruno", "chloé", "djamel")
# The events after the import, with their share (what a portal and a support desk write).
ACTIVITY = (
    ("portal.login", 58), ("portal.set_pin", 8), ("portal.send_code", 8),
    ("code.campaign.member", 6), ("mail.send.member", 6), ("code.issue", 3),
    ("member.update", 3), ("account.unlock", 2), ("pin.reset", 2), ("portal.accept_terms", 2),
    ("letter.cancel", 1), ("member.add", 1),
)  # fmt: skip


@dataclass
class Plan:
    """What to make: `members` members, 5 events each, one letter in ten pending."""

    members: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    seed: int = 18

    @property
    def events(self) -> int:
        return 5 * self.members

    @property
    def pending(self) -> int:
        return max(self.members // 10, 1)

    @property
    def start(self) -> datetime:
        return self.now - timedelta(days=3 * 365)


def nir(serial: int, draw: random.Random, sex: str | None = None) -> str:
    """A valid NIR, unique by serial (department, commune and order encode it)."""
    rest, order = divmod(serial, 999)
    commune, department_index = divmod(rest, 94)
    department = [d for d in range(1, 96) if d != 20][department_index]
    commune %= 990
    year, month = draw.randrange(30, 100), draw.randrange(1, 13)
    body = f"{sex or draw.choice('12')}{year:02d}{month:02d}{department:02d}"
    body += f"{commune + 1:03d}{order + 1:03d}"
    return f"{body}{97 - int(body) % 97:02d}"


def _communes() -> list[tuple[str, str]]:
    places = []
    with gzip.open(POSTCODES, "rt", encoding="utf-8") as lines:
        for line in lines:
            postcode, *entries = line.rstrip("\n").split("\t")
            places += [(postcode, entry.split("|")[1]) for entry in entries]
    return places


@dataclass
class Facts:
    """What the later tables need to know of each member (index: member id)."""

    has_pin: bytearray
    closed: bytearray
    imported_at: list[datetime | None]


class Maker:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.draw = random.Random(plan.seed)
        n = plan.members + 1
        self.facts = Facts(bytearray(n), bytearray(n), [None] * n)
        self.next_letter = 1
        self.next_code = 1

    # --- members and accounts -------------------------------------------------------------

    def members(self) -> Iterator[tuple[list[Row], list[Row]]]:
        """Batches of (members, their accounts)."""
        draw, plan = self.draw, self.plan
        communes = _communes()
        last_weights = list(itertools.accumulate(1 / (1 + r / 20) for r in range(len(LAST))))
        first_weights = list(itertools.accumulate(1 / (1 + r / 10) for r in range(len(FIRST))))
        city_weights = list(itertools.accumulate(w for *_, w in CITIES))
        members: list[Row] = []
        accounts: list[Row] = []
        for member_id in range(1, plan.members + 1):
            if member_id == 1:
                member, account = self._probe()
            else:
                last = draw.choices(LAST, cum_weights=last_weights)[0]
                if draw.random() < 0.03:  # a double name
                    last += "-" + draw.choices(LAST, cum_weights=last_weights)[0]
                first = draw.choices(FIRST, cum_weights=first_weights)[0]
                if draw.random() < 0.6:
                    postcode, city, _ = draw.choices(CITIES, cum_weights=city_weights)[0]
                else:
                    postcode, city = draw.choice(communes)
                member = self._member(member_id, last, first, postcode, city)
                account = self._account(member_id, member)
            members.append(member)
            accounts.append(account)
            if len(members) == BATCH:
                yield members, accounts
                members, accounts = [], []
        if members:
            yield members, accounts

    def _member(
        self, member_id: int, last: str, first: str, postcode: str, city: str, sex: str = ""
    ) -> Row:
        draw, plan = self.draw, self.plan
        number = nir(member_id, draw, sex or None)
        email = None
        if draw.random() < 0.67:
            email = f"{fold(first)}.{fold(last)}{draw.randrange(100)}@{draw.choice(DOMAINS)}"
        year = int(number[1:3])
        born = date(1900 + year, int(number[3:5]), draw.randrange(1, 29))
        imported = draw.random() < 0.9
        created = plan.start + timedelta(
            days=draw.randrange(10) if imported else draw.randrange(3, 3 * 365)
        )
        closed = draw.random() < 0.03
        row: Row = {
            "id": member_id,
            "nir": number,
            "civility": "MME" if number[0] == "2" else "M",
            "last_name": last,
            "first_name": first,
            "birth_date": born,
            "email": email,
            "street": f"{draw.randrange(1, 140)} {draw.choice(STREETS)}",
            "address_complement": f"Appartement {draw.randrange(1, 60)}"
            if draw.random() < 0.1
            else None,
            "address_building": "Résidence Les Pins" if draw.random() < 0.05 else None,
            "locality": "Lieu-dit La Croix" if draw.random() < 0.02 else None,
            "postcode": postcode,
            "city": city,
            "country": "FR",
            "status": "closed" if closed else "active",
            "closed_reason": "décès" if closed else None,
            "closed_at": created + timedelta(days=400) if closed else None,
            "created_at": created,
            "updated_at": created,
            "imported_at": created if imported else None,
        }
        row.update(zip(SEARCH_COLUMNS, folded_columns(last, first, email, city), strict=True))
        self.facts.closed[member_id] = closed
        self.facts.imported_at[member_id] = row["imported_at"]
        return row

    def _account(self, member_id: int, member: Row) -> Row:
        draw = self.draw
        has_pin = member["status"] == "active" and draw.random() < 0.55
        hard = has_pin and draw.random() < 0.0055  # 0.3 % of members
        cooled = not hard and draw.random() < 0.02  # a cool-down long over
        created: datetime = member["created_at"]
        login = created + timedelta(days=draw.randrange(30, 1000)) if has_pin else None
        self.facts.has_pin[member_id] = has_pin
        return {
            "member_id": member_id,
            "pin_hash": PIN_HASH if has_pin else None,
            "pin_set_at": created + timedelta(days=20) if has_pin else None,
            "failed_attempts": 10 if hard else (draw.randrange(1, 3) if cooled else 0),
            "locked_until": created + timedelta(days=40) if cooled or hard else None,
            "captcha_required": hard,
            "hard_locked_at": created + timedelta(days=41) if hard else None,
            "terms_accepted_version": "2024-01" if has_pin else None,
            "terms_accepted_at": created + timedelta(days=20) if has_pin else None,
            "last_login_at": login,
        }

    def _probe(self) -> tuple[Row, Row]:
        member = self._member(1, "Dupont", "Jean", "69003", "Lyon", sex="1")
        created = member["created_at"]
        member.update(status="active", closed_reason=None, closed_at=None, imported_at=created)
        self.facts.closed[1] = False
        self.facts.imported_at[1] = created
        account = {
            **self._account(1, member),
            "pin_hash": PIN_HASH,
            "failed_attempts": 10,
            "locked_until": self.plan.now - timedelta(days=2),
            "captcha_required": True,
            "hard_locked_at": self.plan.now - timedelta(days=2),
            "pin_set_at": created + timedelta(days=20),
            "terms_accepted_version": "2024-01",
            "terms_accepted_at": created + timedelta(days=20),
            "last_login_at": self.plan.now - timedelta(days=3),
        }
        self.facts.has_pin[1] = True
        return member, account

    # --- letters, batches and codes -------------------------------------------------------

    def history(self) -> Iterator[tuple[list[Row], list[Row], list[Row]]]:
        """Batches of (letter batches, printed letters, their used codes): each imported member's
        welcome letter, and a PIN reset letter for one member in ten."""
        plan, draw = self.plan, self.draw
        batches: list[Row] = []
        letters: list[Row] = []
        codes: list[Row] = []
        per_batch = 5000
        for batch_id, first in enumerate(range(1, plan.members + 1, per_batch), start=1):
            ids = range(first, min(first + per_batch, plan.members + 1))
            day = min(self.facts.imported_at[i] or plan.start for i in ids) + timedelta(days=1)
            count = 0
            for member_id in ids:
                kinds = ["welcome"] if self.facts.imported_at[member_id] else []
                if draw.random() < 0.1:
                    kinds.append("pin_reset")
                for kind in kinds:
                    printed = day + timedelta(days=0 if kind == "welcome" else 200)
                    letters.append(self.letter(member_id, kind, "printed", printed, batch_id))
                    count += 1
                    if self.facts.has_pin[member_id]:
                        codes.append(self.code(member_id, kind, "used", printed))
            batches.append(
                {
                    "id": batch_id,
                    "status": "completed",
                    "owner": "cron-cpms@print01:4242",
                    "out_dir": "/srv/print/outgoing",
                    "started_at": day,
                    "finished_at": day + timedelta(minutes=20),
                    "letter_count": count,
                    "manifest": None,
                }
            )
            if len(letters) >= BATCH:
                yield batches, letters, codes
                batches, letters, codes = [], [], []
        yield batches, letters, codes

    def pending(self) -> tuple[list[Row], list[Row]]:
        """Tonight's queue: (letters, the codes used since some of them were queued)."""
        plan, draw, facts = self.plan, self.draw, self.facts
        queued_at = plan.now - timedelta(hours=20)
        letters = [self.letter(1, "pin_reset", "pending", queued_at, None, requested_by=AGENTS[0])]
        codes: list[Row] = []
        active = [i for i in range(2, plan.members + 1) if not facts.closed[i]]
        closed = [i for i in range(2, plan.members + 1) if facts.closed[i]]
        for drawn in draw.sample(active, min(plan.pending - 1, len(active))):
            at = queued_at + timedelta(seconds=draw.randrange(3600))
            roll = draw.random()
            member_id = draw.choice(closed) if roll < 0.001 and closed else drawn
            if member_id != drawn:  # moot: the member was closed since
                kind, by = "security_code", None
            elif roll < 0.004:  # moot: a welcome letter, but the member has a PIN
                kind, by = "welcome" if facts.has_pin[member_id] else "security_code", None
            elif roll < 0.007:  # moot: an older letter of the same member, still waiting
                older = at - timedelta(hours=1)
                letters.append(self.letter(member_id, "security_code", "pending", older, None))
                kind, by = "security_code", "portal"
            elif roll < 0.009:  # moot: the member used an e-mailed code since
                kind, by = "security_code", "portal"
                used = at + timedelta(hours=1)
                codes.append(self.code(member_id, "security_code", "used", used))
            elif not facts.has_pin[member_id]:
                kind, by = "welcome" if roll < 0.5 else "security_code", None
            else:
                kind = "pin_reset" if roll < 0.2 else "security_code"
                by = draw.choice(AGENTS) if kind == "pin_reset" else "portal"
            letters.append(self.letter(member_id, kind, "pending", at, None, requested_by=by))
        first = min(row["id"] for row in letters)
        letters.sort(key=lambda row: row["created_at"])
        for letter_id, row in enumerate(letters, start=first):
            row["id"] = letter_id
        return letters, codes

    def letter(
        self,
        member_id: int,
        kind: str,
        status: str,
        at: datetime,
        batch_id: int | None,
        *,
        requested_by: str | None = None,
    ) -> Row:
        purpose = "first_login" if kind == "welcome" else "pin_reset"
        if kind == "security_code":
            purpose = "pin_reset" if self.facts.has_pin[member_id] else "first_login"
        row = {
            "id": self.next_letter,
            "member_id": member_id,
            "kind": kind,
            "purpose": purpose,
            "status": status,
            "created_at": at - timedelta(hours=3),
            "batch_id": batch_id,
            "printed_at": at if status == "printed" else None,
            "status_reason": None,
            "requested_by": requested_by,
            "wording": None,
        }
        self.next_letter += 1
        return row

    def code(self, member_id: int, kind: str, status: str, at: datetime) -> Row:
        row = {
            "id": self.next_code,
            "member_id": member_id,
            "purpose": "first_login" if kind == "welcome" else "pin_reset",
            "channel": "post",
            "code_hash": hashlib.sha256(str(self.next_code).encode()).hexdigest()[:16]
            + "$"
            + hashlib.sha256(b"c" + str(self.next_code).encode()).hexdigest(),
            "status": status,
            "failed_tries": 0,
            "created_at": at,
            "expires_at": at + timedelta(days=30),
            "used_at": at + timedelta(days=3) if status == "used" else None,
            "letter_id": None,
            "requested_by": None,
        }
        self.next_code += 1
        return row

    # --- the audit log --------------------------------------------------------------------

    def events(self, first_id: int) -> Iterator[list[Row]]:
        """Batches of 5N events in time order, ids from `first_id`, not sealed yet (no seq,
        hashes or key): the import runs, then the activity of the years since."""
        plan, draw = self.plan, self.draw
        ids = itertools.count(first_id)
        batch: list[Row] = []
        imported = [i for i in range(1, plan.members + 1) if self.facts.imported_at[i]]
        made = 0
        for start in range(0, len(imported), 10_000):
            members = imported[start : start + 10_000]
            at = self.facts.imported_at[members[0]] or plan.start
            run = next(ids)
            counts = {"created": len(members), "updated": 0, "skipped": 0, "invalid": 0}
            run_rows = [_event(run, at, "alice", "members.import", None, "started", {})]
            run_rows += [
                _event(next(ids), at, "alice", "members.import.member", m, "ok", {"change":
                       "created", "run": run})
                for m in members
            ]  # fmt: skip
            run_rows.append(
                _event(next(ids), at, "alice", "members.import", None, "ok", {"run": run, **counts})
            )
            batch += run_rows
            made += len(run_rows)
            if len(batch) >= BATCH:
                yield batch
                batch = []
        activity = max(plan.events - made, PROBE_EVENTS)
        # How busy each member is: a long tail (Pareto), capped so none has thousands.
        weights = (min(draw.paretovariate(1.5), 50.0) for _ in range(plan.members))
        busy = list(itertools.accumulate(weights))
        actions = [name for name, _ in ACTIVITY]
        shares = list(itertools.accumulate(share for _, share in ACTIVITY))
        span = (plan.now - plan.start - timedelta(days=12)).total_seconds()
        probe_every = max(activity // PROBE_EVENTS, 1)
        for done in range(0, activity, BATCH):
            size = min(BATCH, activity - done)
            who = draw.choices(range(1, plan.members + 1), cum_weights=busy, k=size)
            what = draw.choices(actions, cum_weights=shares, k=size)
            for offset, (drawn, action) in enumerate(zip(who, what, strict=True)):
                number = done + offset
                # The probe's share, evenly spread; none beside it.
                member_id = 1 if number % probe_every == 0 else max(drawn, 2)
                at = plan.start + timedelta(days=12, seconds=span * number / activity)
                batch.append(self._activity(next(ids), at, action, member_id))
            yield batch
            batch = []
        if batch:
            yield batch

    def _activity(self, event_id: int, at: datetime, action: str, member_id: int) -> Row:
        draw = self.draw
        if action.startswith("portal."):
            agent = "portal"
            outcome = "ok" if draw.random() < 0.8 or action != "portal.login" else "wrong_pin"
            details: dict[str, Any] = {"reason": outcome} if action == "portal.login" else {}
            return _event(event_id, at, agent, action, member_id, outcome, details)
        if action.endswith(".member"):
            details = {"change": "queued" if "campaign" in action else "sent", "run": 1}
            return _event(event_id, at, "cron-cpms", action, member_id, "ok", details)
        row = _event(event_id, at, draw.choice(AGENTS), action, member_id, "ok", {})
        row["reason"] = "appel de l'adhérent, ticket 4521"
        row["label"] = f"T-{draw.randrange(10_000, 99_999)}"
        return row


def _event(
    event_id: int,
    at: datetime,
    agent: str,
    action: str,
    member_id: int | None,
    outcome: str,
    details: dict[str, Any],
) -> Row:
    return {
        "id": event_id,
        "at": at,
        "agent": agent,
        "label": None,
        "action": action,
        "member_id": member_id,
        "reason": None,
        "outcome": outcome,
        "details": json.dumps(details, ensure_ascii=False, sort_keys=True),
    }
