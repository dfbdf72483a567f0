"""Alembic revisions of the index schema, one file each (see docs/architecture.md)."""
