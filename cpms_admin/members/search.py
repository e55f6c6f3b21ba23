"""Member search and sort, fitted to French names.

Folding (`fold`) makes the ways people type a name meet: accents go, `œ æ ß` become
`oe ae ss`, case goes, and every apostrophe (’ ' ʼ ` ´ ‘), hyphen or dash, dot and space
inside a field is dropped. So `N'Diaye`, `N’Diaye` and `Ndiaye` are all `ndiaye`, and
`Jean-Pierre` and `Jean Pierre` are both `jeanpierre`. A member's folded fields are kept in
two columns: `search_text` (names, e-mail, city, one word each) and `sort_name` (last name
then first name: `member list`'s order, byte by byte on both engines).

A search is words that must all appear, each folded the same way, as substrings of
`search_text`: `n diaye`, `n'diaye` and `ndiaye` all find N'Diaye, `jean-pierre` finds
Jean Pierre and `jean pierre` finds Jean-Pierre. A word that could begin a NIR (a digit,
then digits, `a` or `b`) also finds the members whose NIR starts with it; a NIR typed with
separators is one word.

The NIR is not in `search_text`: found by its start, it needs no trigram index, where its
digits were a third of that index's cost on every member written (migration 0013).
The substring test is a LIKE on `search_text` on both engines, so both give the same
answer; an index only narrows the rows to test. On PostgreSQL a pg_trgm GIN index serves
the LIKE itself, and the NIR's unique index its start. SQLite cannot index a LIKE '%x%', so
words of 3 characters or more first go through the FTS5 trigram table `member_search`
(migration 0006, kept in step with `member` by triggers). Shorter words have no trigram:
when they are all a search has and the first members in name order do not hold enough
matches (`find_members`), every row is tested.
"""

import functools
import re
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    text,
    union,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy import table as table_clause
from sqlalchemy.orm import aliased
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cpms_admin.db import count_capped
from cpms_admin.members.afnor import strip_accents
from cpms_admin.models import Member

SEARCH_TEXT_MAX = 600  # the columns' sizes (models.Member); a fold can be longer than its source
SORT_NAME_MAX = 250
FTS_TABLE = "member_search"  # SQLite: its shadow tables are member_search_*
TRIGRAM_INDEX = "ix_member_search_text_trgm"  # PostgreSQL
TRIGRAM = 3  # the shortest word a trigram index can find
WALK = 2000  # members tested in name order before the search index is used (find_members)
Clause = ColumnElement[Any]

_APOSTROPHES = "'’ʼ`´‘‛′"
_DASHES = "-‐‑‒–—―−\u00ad"
_DOTS = ".·‧"
_DROPPED = re.compile(f"[\\s{re.escape(_APOSTROPHES + _DASHES + _DOTS)}]+")
# What separates the words of a search besides spaces: what a name or an address is pasted
# with (`MARTIN, Jean`, `Jean <jean@example.fr>`, `"Martin"`). Not in any folded value.
_QUERY_SEPARATORS = re.compile(r"[\s,;<>\"()]+")
_NIR_START = re.compile(r"[0-9][0-9ab]{0,14}", flags=re.IGNORECASE)  # ASCII: `\d` takes ٣
_NIR_NEXT = {**{str(digit): str(digit + 1) for digit in range(9)}, "A": "B", "B": "C"}


class Searchable(Protocol):
    """What search reads of a member (a Member, or the fields of one being made)."""

    @property
    def last_name(self) -> str: ...
    @property
    def first_name(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def city(self) -> str: ...


# Cached: names and towns repeat through an import file, and a member's names are folded
# twice (search_text and sort_name). Bounded, so an import's memory stays flat.
@functools.lru_cache(maxsize=1 << 15)
def fold(text: str) -> str:
    """One field as search compares it: `fold("d’Harcourt-Œuvrard") == "dharcourtoeuvrard"`."""
    return _DROPPED.sub("", strip_accents(text).casefold())


SEARCH_COLUMNS = ("search_text", "sort_name")


def folded_columns(
    last_name: str, first_name: str, email: str | None, city: str
) -> tuple[str, str]:
    """The member table's folded columns, in SEARCH_COLUMNS order:

    - `search_text`: each searchable field folded, one word each;
    - `sort_name`: folded last name, a space, folded first name. Particles sort under their
      letter (d'Arcy under D, de La Tour under D), accents are ignored, and a space sorts
      before any letter, so every Dupont comes before Dupont-Aignan. Empty for a member
      without names (pseudonymised: privacy.pseudonymise blanks both columns).

    Fields rather than a member: an import makes these for every row without making one."""
    last, first = fold(last_name), fold(first_name)
    words = (last, first, fold(email) if email else "", fold(city))
    text = " ".join(word for word in words if word)[:SEARCH_TEXT_MAX]
    return text, (f"{last} {first}"[:SORT_NAME_MAX] if last or first else "")


def search_values(member: Searchable) -> dict[str, str]:
    """The member table's folded columns for this member, by name."""
    columns = folded_columns(member.last_name, member.first_name, member.email, member.city)
    return dict(zip(SEARCH_COLUMNS, columns, strict=True))


def search_terms(search: str) -> list[str]:
    """Words to find, all of them, folded; a NIR typed with separators is one term, alone
    (`1 85 05`) or beside names (`martin 1 85 05`); commas, brackets and quotes pasted
    around a name or an address separate words as spaces do."""
    terms: list[str] = []
    for word in map(fold, _QUERY_SEPARATORS.split(search)):
        # Digits after a NIR's start go on with it; a name after digits (`1985 ba`) does not.
        joined = terms[-1] + word if terms and word[:1].isdecimal() else ""
        if could_start_nir(joined):
            terms[-1] = joined
        elif word:
            terms.append(word)
    return list(dict.fromkeys(terms))


def could_start_nir(term: str) -> bool:
    """Does this term also find the members whose NIR starts with it?"""
    return _NIR_START.fullmatch(term) is not None


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(member: FromClause, terms: list[str], *, indexed: bool) -> list[Clause]:
    """`member` holds every term: the LIKEs (and NIR starts) decide, on both engines alike.
    `indexed`, on SQLite, first narrows the rows to those an index finds for the terms of 3
    characters or more (PostgreSQL's planner uses its trigram and NIR indexes itself)."""
    conditions: list[Clause] = [_holds(member, term) for term in terms]
    if not indexed:
        return conditions
    long_terms = [term for term in terms if len(term) >= TRIGRAM]
    words = [term for term in long_terms if not could_start_nir(term)]
    if words:
        conditions.insert(0, member.c.id.in_(_trigram_matches(words)))
    if nir_starts := [term for term in long_terms if could_start_nir(term)]:
        longest = max(nir_starts, key=len)  # a NIR's start, or e-mails holding those digits
        starts = core_select(member.c.id).where(_nir_starts(member, longest))
        conditions.insert(0, member.c.id.in_(union(_trigram_matches([longest]), starts)))
    return conditions


def _holds(member: FromClause, term: str) -> Clause:
    found = member.c.search_text.like(_like(term), escape="\\")
    return or_(found, _nir_starts(member, term)) if could_start_nir(term) else found


def _nir_starts(member: FromClause, term: str) -> Clause:
    """The NIR starts with `term`, as a range of the NIR's index (a LIKE 'x%' is served by
    no index under PostgreSQL's usual collations) checked by the prefix itself. The range's
    end raises the last character that can be raised (`189` -> `19`): the NIR's characters
    sort in the same order under every collation, where `:` (after `9`) may not."""
    start = term.upper()
    condition = (member.c.nir >= start) & (func.substr(member.c.nir, 1, len(start)) == start)
    head = start
    while head and head[-1] == "9":
        head = head[:-1]
    if head:
        condition &= member.c.nir < head[:-1] + _NIR_NEXT[head[-1]]
    return condition


def _trigram_matches(terms: list[str]) -> Any:
    """SQLite: the members whose `search_text` the FTS5 trigram table finds every term in."""
    fts = table_clause(FTS_TABLE, column("rowid"))
    query = " AND ".join('"' + term.replace('"', '""') + '"' for term in terms)
    return core_select(fts.c.rowid).where(literal_column(FTS_TABLE).op("MATCH")(query))


def find_members(
    session: Session,
    query: SelectOfScalar[Member],
    terms: list[str],
    *,
    limit: int | None,
    walk: int = WALK,
) -> list[Member]:
    """The first `limit` members (all with None) of `query` (a `select(Member)` with its
    filters) holding every term, in name order. Neither planner can tell how many rows a
    LIKE keeps, and each guessed wrong at a million members (walking the name index past
    400,000 rows to find a rare name), so the plan is ours, the same on both engines:

    1. the first `walk` members in name order are tested: a common word is found there;
    2. if fewer than `limit` matched, every match is found (through the search index for
       words of 3 characters or more, else by testing every row), then sorted.
    """
    head = query.order_by(*_order(Member)).limit(walk).subquery("head")
    first = aliased(Member, head)
    walked = list(
        session.exec(
            select(first)
            .where(*_conditions(head, terms, indexed=False))
            .order_by(*_order(first))
            .limit(limit)
        )
    )
    if len(walked) == limit:
        return walked
    sqlite = session.get_bind().dialect.name == "sqlite"
    member = SQLModel.metadata.tables["member"]
    # MATERIALIZED: the matches are gathered first, so no planner walks the name index.
    found = (
        query.with_only_columns(member.c.id, member.c.sort_name)
        .where(*_conditions(member, terms, indexed=sqlite))
        .cte("found")
        .prefix_with("MATERIALIZED")
    )
    top = core_select(found.c.id).order_by(found.c.sort_name, found.c.id).limit(limit)
    members = session.exec(select(Member).where(col(Member.id).in_(top)).order_by(*_order(Member)))
    return list(members)


def count_matches(session: Session, query: SelectOfScalar[Member], terms: list[str]) -> int:
    """How many members of `query` hold every term (through the search index where it can),
    up to `db.COUNT_CAP` + 1, for a listing that `find_members` cut at its limit."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    member = SQLModel.metadata.tables["member"]
    matching = query.with_only_columns(member.c.id).where(
        *_conditions(member, terms, indexed=sqlite)
    )
    return count_capped(session, matching)


def _order(member: type[Member]) -> tuple[Any, ...]:
    """Name order, as the ix_member_sort_name index keeps it."""
    return (col(member.sort_name), col(member.id))


def outside_search_index(name: str | None, kind: str, _parents: object = None) -> bool:
    """False for the search index's own objects, which migration 0006 makes outside the
    models (the FTS5 table and its shadow tables, the trigram index): Alembic's `include_name`,
    so comparing the schema with the models leaves them out."""
    if name is None:
        return True
    if kind == "table":
        return not (name == FTS_TABLE or name.startswith(f"{FTS_TABLE}_"))
    return not (kind == "index" and name == TRIGRAM_INDEX)


def refresh_search_columns(connection: Connection, *, batch_size: int = 5000) -> int:
    """Recompute every member's folded columns (after the folding changed), in batches of
    one keyset-paged read and one executemany of the rows that differ; the count changed.
    The table is named by the columns it reads, not taken from the models: migrations run
    this on the table of their revision, whatever the models hold since."""
    names = ("id", "last_name", "first_name", "email", "city", *SEARCH_COLUMNS)
    member = table_clause("member", *(column(name) for name in names))
    read = core_select(*member.c).order_by(member.c.id)
    write = update(member).where(member.c.id == bindparam("member_key"))
    changed, after = 0, 0
    while rows := connection.execute(read.where(member.c.id > after).limit(batch_size)).all():
        changes = [
            {"member_key": row.id, **values}
            for row in rows
            if (values := search_values(row))
            != {"search_text": row.search_text, "sort_name": row.sort_name}
        ]
        if changes:
            connection.execute(write, changes)
        changed += len(changes)
        after = rows[-1].id
    return changed


def forget_removed_words(session: Session) -> None:
    """SQLite: merge the search index's segments, in the caller's transaction. FTS5 keeps the
    words of a row it was told to remove until its segments are merged, in the file, where
    pseudonymised members' names would stay. (PostgreSQL's trigram index drops them with the
    row versions, when autovacuum reclaims them.)"""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT INTO member_search(member_search) VALUES ('optimize')"))
