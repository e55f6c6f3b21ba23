"""scale: partial indexes on the locked accounts

Revision ID: 0012
Revises: 0011

`member list --locked` at a million members (issue 18, bench/scale.py): a join testing
`hard_locked_at IS NOT NULL OR locked_until > now` read every account, on both engines (an OR
on two columns is served by no index), 0.2 to 0.45 s at a million. Two partial indexes hold
only the accounts with the column set, the member id beside it, so that each kind of lock is
one indexed range (`records.locked_accounts`):

- `ix_account_hard_locked_at (hard_locked_at, member_id) WHERE hard_locked_at IS NOT NULL`;
- `ix_account_locked_until (locked_until, member_id) WHERE locked_until IS NOT NULL`.

Each is built in the upgrade's transaction from one read of `account` (about a second for a
million accounts on PostgreSQL; logins wait for it meanwhile).
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


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="account")
