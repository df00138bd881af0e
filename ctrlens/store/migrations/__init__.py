"""Alembic migrations of the ctrlens store (revisions in versions/)."""
