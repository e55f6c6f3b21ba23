"""retention: the moment a closed member's personal data was pseudonymised

Revision ID: 0010
Revises: 0008

Adds `member.pseudonymised_at`, set by `cpms-admin purge` when it replaces the personal data
of a member closed longer than the retention period (the row and its id stay, so that the
audit events about the member are kept unchanged). Existing members have None.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite adds a column in place (no copy of the table, which would lose the search
    # index's triggers of 0006).
    op.add_column("member", sa.Column("pseudonymised_at", sqlmodel.sql.sqltypes.UTCDateTime()))


def downgrade() -> None:
    op.drop_column("member", "pseudonymised_at")
