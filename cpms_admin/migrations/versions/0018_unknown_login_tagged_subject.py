"""unknown NIRs' counters: a row key tagged with the pepper that made it

Revision ID: 0018
Revises: 0017

An unknown NIR's failure counters are keyed by a keyed hash of the NIR. A pepper rotation
gave every NIR a new key, so an unknown NIR's counters started afresh while a member's, on
their account, stayed: whoever had locked both could then tell them apart. The row key now
carries the id of the pepper that made it (`k<id>$`, as a code's hash does), so that a
rotation's counters are found under an older pepper and moved to the current one, and
`pepper status` counts them under the pepper they need. 64 characters no longer hold a tag.
"""

from collections.abc import Sequence

import sqlmodel
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # PostgreSQL widens the column in place; SQLite copies the table (a batch).
    with op.batch_alter_table("unknown_login") as batch_op:
        batch_op.alter_column(
            "subject",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=64),
            type_=sqlmodel.sql.sqltypes.AutoString(length=80),
            existing_nullable=False,
        )


def downgrade() -> None:
    # A tagged key does not fit back: those counters go (they only delay guesses).
    op.execute("DELETE FROM unknown_login WHERE length(subject) > 64")
    with op.batch_alter_table("unknown_login") as batch_op:
        batch_op.alter_column(
            "subject",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=80),
            type_=sqlmodel.sql.sqltypes.AutoString(length=64),
            existing_nullable=False,
        )
