"""scale: indexes for member list --locked and --status at a million members

Revision ID: 0012
Revises: 0011

Measured by bench/scale.py (issue 18):

- `member list --locked`: a join testing `hard_locked_at IS NOT NULL OR locked_until > now`
  read every account, on both engines (an OR on two columns is served by no index), 0.3 to
  0.45 s at a million. Two partial indexes hold only the accounts with the column set, the
  member id beside it, so that each kind of lock is one indexed range
  (`views.locked_accounts`): `ix_account_hard_locked_at (hard_locked_at, member_id) WHERE
  hard_locked_at IS NOT NULL` and `ix_account_locked_until (locked_until, member_id) WHERE
  locked_until IS NOT NULL`.
- `member list --status active`: SQLite, which has no statistics (cpms-admin never runs
  ANALYZE), found the active members through `ix_member_status` and sorted all of them by
  name to list 50 (0.22 s). `ix_member_status_sort_name (status, sort_name, id)` gives the
  members of one status in name order, and serves every test of the status alone: it
  replaces `ix_member_status` (as many indexes to keep up on each write as before).

Each index is built in the upgrade's transaction from one read of its table (seconds for a
million members on PostgreSQL; writes to it wait meanwhile).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_account_hard_locked_at": "hard_locked_at",
    "ix_account_locked_until": "locked_until",
}


def upgrade() -> None:
    for name, column in INDEXES.items():
        only_set = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name,
            "account",
            [column, "member_id"],
            sqlite_where=only_set,
            postgresql_where=only_set,
        )
    op.create_index("ix_member_status_sort_name", "member", ["status", "sort_name", "id"])
    op.drop_index("ix_member_status", table_name="member")


def downgrade() -> None:
    op.create_index("ix_member_status", "member", ["status"])
    op.drop_index("ix_member_status_sort_name", table_name="member")
    for name in INDEXES:
        op.drop_index(name, table_name="account")
