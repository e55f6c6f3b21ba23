"""the six AFNOR lines as fields, and names stored whole

Revision ID: 0005
Revises: 0004

Adds line 3 (`address_building`), line 5 (`locality`) and the agent's recipient line
(`envelope_name`); widens the street, complement and city to 100 characters, since the
printed lines are now derived from them (abbreviated where needed). Existing rows are kept
as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WIDENED = ("street", "address_complement", "city")


def upgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("address_building", sqlmodel.sql.sqltypes.AutoString(length=100))
        )
        batch_op.add_column(sa.Column("locality", sqlmodel.sql.sqltypes.AutoString(length=100)))
        batch_op.add_column(sa.Column("envelope_name", sqlmodel.sql.sqltypes.AutoString(length=38)))
        for name in _WIDENED:
            batch_op.alter_column(
                name,
                type_=sqlmodel.sql.sqltypes.AutoString(length=100),
                existing_type=sqlmodel.sql.sqltypes.AutoString(length=38),
            )


def downgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        for name in _WIDENED:
            batch_op.alter_column(
                name,
                type_=sqlmodel.sql.sqltypes.AutoString(length=38),
                existing_type=sqlmodel.sql.sqltypes.AutoString(length=100),
            )
        batch_op.drop_column("envelope_name")
        batch_op.drop_column("locality")
        batch_op.drop_column("address_building")
