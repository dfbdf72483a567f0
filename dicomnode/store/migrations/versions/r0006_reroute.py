"""Routing again (issue 16): a completion entry an operator queued to re-route a series
version says who asked. Entries already there were the node's own: NULL.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("series_completions") as batch:
        batch.add_column(sa.Column("rerouted_by", sa.String(128), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the index migrates forward only; restore a backup instead")
