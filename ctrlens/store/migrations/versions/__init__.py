"""Alembic revisions: 0001 initial schema, 0002 alert history, locks and query indexes."""
