"""Alembic environment: runs on the connection handed over by `db.upgrade_schema`."""

from alembic import context
from sqlmodel import SQLModel

import cpms_admin.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from cpms_admin.members.search import outside_search_index

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cpms-admin db upgrade`")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    include_name=outside_search_index,
)
with context.begin_transaction():
    context.run_migrations()
    # From 0008 on, tables a migration added get the roles' privileges (agents/grants.py).
    if connection.dialect.name == "postgresql" and connection.dialect.has_table(
        connection, "agent"
    ):
        from cpms_admin.agents.grants import apply_grants

        apply_grants(connection)
