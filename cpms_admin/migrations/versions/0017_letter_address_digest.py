"""letters: a keyed digest of the address each was printed with

Revision ID: 0017
Revises: 0016

A returned letter flags the member's address undeliverable unless the member has moved since
it was printed. "Moved since" was told by dates (and by the reason of a letter voided for
bearing an old address), so a member who moved and came back, or whose address was corrected
twice, kept an address the post had just shown undeliverable. `address_digest` holds what the
letter bore, keyed with the pepper (an address is personal data), to compare with the
member's address when the letter comes back. Letters printed before this revision have none:
the dates judge them, as they judge any letter whose digest does not match.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: a plain ADD COLUMN on both engines, no copy of the table.
    digest = sa.Column("address_digest", sqlmodel.sql.sqltypes.AutoString(length=100))
    op.add_column("letter", digest)


def downgrade() -> None:
    with op.batch_alter_table("letter") as batch_op:
        batch_op.drop_column("address_digest")
