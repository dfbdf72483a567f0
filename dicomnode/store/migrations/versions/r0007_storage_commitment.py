"""Storage commitment (PS3.4 Annex J): a send says whether the destination committed to
keeping its instances, under which transaction UID, and until when the report may come.
Sends already there were never asked: NULL.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("commitment", sa.String(16), nullable=True))
        batch.add_column(sa.Column("commitment_uid", sa.String(64), nullable=True))
        batch.add_column(sa.Column("commitment_due", sa.DateTime(), nullable=True))
        batch.create_index("ix_sends_commitment_uid", ["commitment_uid"])


def downgrade() -> None:
    raise NotImplementedError("the index migrates forward only; restore a backup instead")
