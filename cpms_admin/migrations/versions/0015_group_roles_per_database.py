"""PostgreSQL: each database its own group roles

Revision ID: 0015
Revises: 0014

Until now the group roles (`cpms_support`, ...) were the cluster's, shared by every CPMS
database on it: `agent add` in one database (staging) took the agent's groups away in another
(production), and an admin of one was `cpms_admin` WITH ADMIN OPTION in all of them, so could
make themselves admin of a database where they were only support. Each database now has groups
named after it (`cpms_support@cpms`, agents/grants.py).

The work is `apply_grants`, which runs after every upgrade (migrations/env.py): it creates
this database's groups, makes each enabled agent a member of its own (and no one else), and
takes every privilege any other CPMS group held here away from it, the shared groups
included. This revision only makes every database take that upgrade once. The shared groups
and their members stay as they are for the cluster's other CPMS databases: a DBA drops them
once every one is upgraded (README, "Agents and rights"). Nothing to do on SQLite.
"""

from collections.abc import Sequence

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """See the docstring: migrations/env.py applies the grants after this."""


def downgrade() -> None:
    """The shared groups' privileges are not given back: that would reopen the hole."""
