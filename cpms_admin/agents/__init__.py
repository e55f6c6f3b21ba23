"""Agents and their rights: who is acting (from the system, never from a flag), the roles,
which commands each role may run, and, on PostgreSQL, the database roles that enforce it."""
