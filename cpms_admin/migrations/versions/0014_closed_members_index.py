"""members: the index of one status in name order holds only the closed members

Revision ID: 0014
Revises: 0013

Measured by bench/scale_bulk.py (issue 18): `ix_member_status_sort_name (status, sort_name,
id)` (0012) cost every member written an entry, a tenth of the PostgreSQL server's work per
member imported. The listing it served needs an index only for the few: the active members
(nearly all of them) are found in name order through `ix_member_sort_name`, skipping the
closed ones; the closed members not pseudonymised, a few in a hundred, through
`ix_member_closed_sort_name (sort_name, id) WHERE status = 'closed' AND pseudonymised_at IS
NULL`, which also serves `members export --status closed` and the retention job's batches
(privacy/pseudonymise.py). The queries name the status as a literal, so that either engine
can match them to the index's condition (`db.stated`).

The index is built in the upgrade's transaction from one read of `member`, and the old one
dropped: 0.3 s on SQLite, 0.1 s on PostgreSQL for a million members (1.3 s and 1.1 s back
down), during which members cannot be written, and on PostgreSQL not read either (DROP
INDEX locks the table until the upgrade commits).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLOSED = sa.text("status = 'closed' AND pseudonymised_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_member_closed_sort_name",
        "member",
        ["sort_name", "id"],
        sqlite_where=CLOSED,
        postgresql_where=CLOSED,
    )
    op.drop_index("ix_member_status_sort_name", table_name="member")


def downgrade() -> None:
    op.create_index("ix_member_status_sort_name", "member", ["status", "sort_name", "id"])
    op.drop_index("ix_member_closed_sort_name", table_name="member")
