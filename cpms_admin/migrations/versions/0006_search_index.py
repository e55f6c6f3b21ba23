"""member search fitted to French names: the new folding, a sort key, a search index

Revision ID: 0006
Revises: 0005

Written beside 0005 (the address columns, on another branch), and chained after it at the
merge.

- `member.sort_name` (folded last name and first name; "C" collation on PostgreSQL, so it
  orders byte by byte as SQLite does) and its index `ix_member_sort_name (sort_name, id)`;
- `member.search_text` and `sort_name` recomputed for every member with the new folding
  (members/search.py: apostrophes, hyphens, dots and spaces dropped, œ æ ß spelt out);
- the search index, built once the rows are filled: on SQLite an FTS5 trigram table
  `member_search` over `member.search_text` (external content: it keeps only the index)
  with the triggers that keep it in step with every write to `member`; on PostgreSQL the
  pg_trgm extension (if not there yet) and a GIN trigram index on `search_text`.

On PostgreSQL, `CREATE EXTENSION pg_trgm` needs a role that may create it (pg_trgm is a
trusted extension: the database's owner may). The index is built inside the migration's
transaction, so writes to `member` wait for it (seconds for a million members).
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cpms_admin.members.search import refresh_search_columns

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORT_NAME = sa.String(250).with_variant(sa.String(250, collation="C"), "postgresql")

# Spelt out, not built from members/search.py's names: a migration's SQL must not change.
SQLITE_INDEX = [
    """CREATE VIRTUAL TABLE member_search USING fts5(
        search_text, content='member', content_rowid='id', tokenize='trigram')""",
    """CREATE TRIGGER member_search_insert AFTER INSERT ON member BEGIN
        INSERT INTO member_search (rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    """CREATE TRIGGER member_search_delete AFTER DELETE ON member BEGIN
        INSERT INTO member_search (member_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
    END""",
    """CREATE TRIGGER member_search_update AFTER UPDATE OF search_text ON member
    WHEN old.search_text IS NOT new.search_text BEGIN
        INSERT INTO member_search (member_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
        INSERT INTO member_search (rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    "INSERT INTO member_search (member_search) VALUES ('rebuild')",
]
POSTGRESQL_INDEX = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_member_search_text_trgm ON member USING gin (search_text gin_trgm_ops)",
]


def upgrade() -> None:
    op.add_column("member", sa.Column("sort_name", SORT_NAME, server_default="", nullable=False))
    refresh_search_columns(op.get_bind())
    op.create_index("ix_member_sort_name", "member", ["sort_name", "id"])
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_INDEX if dialect == "sqlite" else POSTGRESQL_INDEX:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER member_search_{trigger}")
        op.execute("DROP TABLE member_search")
    else:
        op.execute(
            "DROP INDEX ix_member_search_text_trgm"
        )  # pg_trgm stays: other schemas may use it
    op.drop_index("ix_member_sort_name", "member")
    op.execute("ALTER TABLE member DROP COLUMN sort_name")  # no table rebuild on SQLite
    _fold_as_0004()


def _fold_as_0004(batch_size: int = 5000) -> None:
    """`search_text` as revision 0004's code folded it: accents stripped, case folded."""

    def fold(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text)
        return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()

    member = sa.table(
        "member",
        *(sa.column(name) for name in ("id", "last_name", "first_name", "nir", "email", "city")),
        sa.column("search_text"),
    )
    connection = op.get_bind()
    write = sa.update(member).where(member.c.id == sa.bindparam("member_key"))
    after = 0
    read = sa.select(member).order_by(member.c.id).limit(batch_size)
    while rows := connection.execute(read.where(member.c.id > after)).all():
        connection.execute(
            write,
            [
                {
                    "member_key": row.id,
                    "search_text": fold(
                        " ".join(
                            (row.last_name, row.first_name, row.nir, row.email or "", row.city)
                        )
                    ),
                }
                for row in rows
            ],
        )
        after = rows[-1].id
