"""letters say why they were sent, and returned mail

Revision ID: 0007
Revises: 0006

Adds `letter.wording`, the wording a campaign chose for its letters (first access or
migration to the new portal); the letters already queued keep None, which their kind and
who asked for them decide, as before. Adds the member's undeliverable flag (`undeliverable_at`,
`undeliverable_reason`), set when a letter comes back (NPAI), and `address_changed_at`, so a
letter printed before an address change does not flag the new address. Existing members are
deliverable, with no known address change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wording", sqlmodel.sql.sqltypes.AutoString(length=20)))
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address_changed_at", sqlmodel.sql.sqltypes.UTCDateTime()))
        batch_op.add_column(sa.Column("undeliverable_at", sqlmodel.sql.sqltypes.UTCDateTime()))
        batch_op.add_column(
            sa.Column("undeliverable_reason", sqlmodel.sql.sqltypes.AutoString(length=300))
        )


def downgrade() -> None:
    # Not in batch mode: on SQLite that copies `member` into a new table, which would lose the
    # search index's triggers (0006). SQLite 3.35+ drops a column in place.
    for name in ("undeliverable_reason", "undeliverable_at", "address_changed_at"):
        op.drop_column("member", name)
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_column("wording")
