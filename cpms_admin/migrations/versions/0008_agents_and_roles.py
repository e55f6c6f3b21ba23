"""agents and their roles; the audit log records a label beside the agent

Revision ID: 0008
Revises: 0007

Adds the `agent` table (who may run commands, with which role) and `audit_event.label`, the
free text `--agent` / `CPMS_AGENT` now only adds beside the identity the system gives. Whoever
runs this migration (the OS user on SQLite, the login role on PostgreSQL) becomes the first
admin, so the person who creates or upgrades a database can go on using it. On PostgreSQL the
group roles and their privileges are applied after every upgrade (migrations/env.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from cpms_admin.agents.identity import system_identity
from cpms_admin.agents.registry import check_reserved
from cpms_admin.agents.roles import Role
from cpms_admin.clock import system_clock

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    agent = op.create_table(
        "agent",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), primary_key=True),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("added_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("added_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("disabled_at", sqlmodel.sql.sqltypes.UTCDateTime()),
        sa.Column("disabled_reason", sqlmodel.sql.sqltypes.AutoString()),
    )
    # Not in batch mode: a plain ADD COLUMN on both engines, no copy of the table.
    op.add_column("audit_event", sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=100)))
    runner = system_identity(op.get_bind())
    check_reserved(runner, Role.admin)
    op.bulk_insert(
        agent,
        [{"name": runner, "role": "admin", "added_at": system_clock(), "added_by": runner}],
    )


def downgrade() -> None:
    op.drop_column("audit_event", "label")
    op.drop_table("agent")
