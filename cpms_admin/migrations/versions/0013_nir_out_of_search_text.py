"""search: the NIR out of search_text, found from its start through its own index

Revision ID: 0013
Revises: 0012

Measured by bench/scale_bulk.py (issue 18): on PostgreSQL the trigram index on
`member.search_text` was half of the server's work per member imported, and the NIR's
digits a third of that index's cost: a million members' search columns went into a table
with that index alone in 18 s with the NIR, 12 s without (FTS5's table on SQLite paid the
same way). A million-row import took 10% less time on PostgreSQL, 7% on SQLite. A word
that could begin a NIR now finds the members whose NIR starts with it through the NIR's
unique index (members/search.py), so `search_text` keeps the names, e-mail and city only.

- upgrade: every member's `search_text` recomputed (`search.refresh_search_columns`). On
  PostgreSQL the trigram index is dropped first and built again after, from one read of
  the table (rewriting a million rows under it would update it a million times); on
  SQLite the FTS5 table's triggers keep it in step. For a million members 83 s on SQLite,
  59 s on PostgreSQL (a 2-core machine). Writes to `member` wait meanwhile, and on
  PostgreSQL reads too (DROP INDEX locks the table until the upgrade commits): a
  maintenance window. Pseudonymised members keep their blank columns (search.folded_columns).
- downgrade: the NIR put back, as the first word of `search_text` (where it stands
  matters to no search), for the members not pseudonymised (theirs is empty).
"""

from collections.abc import Sequence

from alembic import op

from cpms_admin.members.search import TRIGRAM_INDEX, refresh_search_columns

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(f"DROP INDEX {TRIGRAM_INDEX}")
    refresh_search_columns(op.get_bind())
    if postgresql:
        op.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON member USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    op.execute(
        "UPDATE member SET search_text = substr(lower(nir) || ' ' || search_text, 1, 600) "
        "WHERE pseudonymised_at IS NULL"
    )
