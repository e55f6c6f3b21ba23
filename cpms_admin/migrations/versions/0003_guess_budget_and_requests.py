"""who asked for each code and letter, the code of each e-mail, code requests

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("code_request", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_code_request_subject"), ["subject"], unique=False)
        batch_op.create_index(batch_op.f("ix_code_request_at"), ["at"], unique=False)
    for table in ("letter", "security_code"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "requested_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True
                )
            )
    with op.batch_alter_table("outgoing_mail", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_outgoing_mail_code_id", "security_code", ["code_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("outgoing_mail", schema=None) as batch_op:
        batch_op.drop_constraint("fk_outgoing_mail_code_id", type_="foreignkey")
        batch_op.drop_column("code_id")
    for table in ("security_code", "letter"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("requested_by")
    with op.batch_alter_table("code_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_code_request_at"))
        batch_op.drop_index(batch_op.f("ix_code_request_subject"))
    op.drop_table("code_request")
