"""The index schema's Alembic migrations, run by the node itself at start (no alembic.ini).

Revisions go forward only: a node refuses an index newer than itself, and going back is
restoring the backup taken before the upgrade.
"""
