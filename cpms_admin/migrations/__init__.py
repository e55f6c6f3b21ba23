"""Alembic migrations, shipped inside the package so a wheel install can upgrade."""

# The latest revision, kept here so checking the schema does not load Alembic.
# tests/test_db.py checks it matches the migration scripts.
HEAD_REVISION = "0019"
