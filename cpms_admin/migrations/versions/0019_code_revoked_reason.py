"""security codes: why one was revoked

Revision ID: 0019
Revises: 0018

`account status` said of a member's revoked code only that "an address or e-mail changed, a
letter came back, an agent" revoked it, so the agent could not tell the member which. Each
revocation now records its reason (`vocabulary.RevokeReason`); codes revoked before this
revision keep none, and are described as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: a plain ADD COLUMN on both engines, no copy of the table.
    reason = sa.Column("revoked_reason", sqlmodel.sql.sqltypes.AutoString(length=20))
    op.add_column("security_code", reason)


def downgrade() -> None:
    with op.batch_alter_table("security_code") as batch_op:
        batch_op.drop_column("revoked_reason")
