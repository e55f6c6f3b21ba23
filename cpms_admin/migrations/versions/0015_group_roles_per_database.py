"""PostgreSQL: each database its own group roles

Revision ID: 0015
Revises: 0014

Until now the group roles (`cpms_support`, ...) were the cluster's, shared by every CPMS
database on it: `agent add` in one database (staging) took the agent's groups away in another
(production), and an admin of one was `cpms_admin` WITH ADMIN OPTION in all of them, so could
make themselves admin of a database where they were only support. Each database now has groups
named after it (`cpms_support@cpms`, agents/grants.py). This upgrade creates them, makes each
enabled agent a member of its own, and takes every privilege the shared groups held in this
database away from them. The shared groups and their members stay as they are for the cluster's
other CPMS databases: a DBA drops them once every one is upgraded (README, "Agents and rights").
Nothing to do on SQLite.
"""

from collections.abc import Sequence

from alembic import op

from cpms_admin.agents.grants import apply_grants, leave_legacy_groups

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        apply_grants(bind)
        leave_legacy_groups(bind)


def downgrade() -> None:
    """The shared groups' privileges are not given back: that would reopen the hole."""
