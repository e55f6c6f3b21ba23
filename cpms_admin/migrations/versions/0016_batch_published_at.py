"""letter batches: when their directory was published

Revision ID: 0016
Revises: 0015

A batch is committed (its codes stored), then its staging directory is renamed to its final
name. A run that dies in between leaves the staging directory for the next run to publish;
but if that directory was deleted meanwhile, nothing said so, and the batch's letters stayed
"printed", with live codes, in no file. `published_at` tells a batch published from one that
never was (letters/recovery.py). The batches completed before this revision are taken as
published (they were, or their staging directory is still there and the next run publishes
it as before).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: a plain ADD COLUMN on both engines, no copy of the table.
    op.add_column("letter_batch", sa.Column("published_at", sqlmodel.sql.sqltypes.UTCDateTime()))
    op.execute("UPDATE letter_batch SET published_at = finished_at WHERE status = 'completed'")


def downgrade() -> None:
    with op.batch_alter_table("letter_batch") as batch_op:
        batch_op.drop_column("published_at")
