"""the audit log becomes a chain

Revision ID: 0011
Revises: 0010

Adds the chain's columns to `audit_event` (`seq`, unique; `prev_hash`, `hash`, `key_id`) and
the chain's one-row head `audit_chain`. No key is at hand here (the key comes from the
pepper), so the events already written are left unsealed: the head records the highest id
among them (`legacy_max_id`), and `db upgrade`, right after migrating, seals them in id order
as the chain's first events. Until it has, no event can be written (run it again if it was
interrupted). Events written by hand later are not swept in: `audit verify` names them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64  # the "hash" before the first event


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64)))
        batch_op.add_column(sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64)))
        batch_op.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_event_seq"), ["seq"], unique=True)
    head = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("anchor_seq", sa.BigInteger(), nullable=False),
        sa.Column("anchor_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("legacy_max_id", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("mac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    legacy = op.get_bind().execute(sa.text("SELECT max(id) FROM audit_event")).scalar()
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "seq": 0,
                "hash": GENESIS,
                "anchor_seq": 0,
                "anchor_hash": GENESIS,
                "legacy_max_id": legacy,
                "key_id": None,
                "mac": None,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_seq"))
    for name in ("key_id", "hash", "prev_hash", "seq"):
        op.drop_column("audit_event", name)
