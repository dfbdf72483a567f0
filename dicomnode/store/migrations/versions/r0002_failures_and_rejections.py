"""Routing failures, job backoff and IOCM rejections (issue 11).

An index made without Alembic by a build after e23735d may hold some of these already,
so each is added only where missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Each new column is nullable or has a server default, so the rows already there read
# as before (the tables set the same values from Python for new rows).
_COLUMNS: dict[str, list[sa.Column[Any]]] = {
    "series": [sa.Column("rejected_count", sa.Integer(), nullable=False, server_default="0")],
    "series_completions": [
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.String(length=1024), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
    ],
    "jobs": [
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
    ],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        missing = [column for column in columns if column.name not in present]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)
    if inspector.has_table("rejections"):
        return
    op.create_table(
        "rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("meaning", sa.String(length=64), nullable=False),
        sa.Column("note_sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("note_series_id", sa.Integer(), nullable=False),
        sa.Column("note_version", sa.Integer(), nullable=False),
        sa.Column("noted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["note_series_id"], ["series.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid", "series_uid"),
    )
    op.create_index(
        "ix_rejections_sop_instance_uid", "rejections", ["sop_instance_uid"], unique=False
    )


def downgrade() -> None:
    raise NotImplementedError("the index migrates forward only; restore a backup instead")
