"""Integer columns 64-bit on PostgreSQL, as SQLite's always are (BIGINT, BIGSERIAL ids).

A 32-bit INTEGER failed a query for a larger id ("integer out of range") instead of
finding nothing. SQLite is left as it is.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_INTEGERS = {
    "associations": ["id", "peer_port", "instance_count"],
    "rules_versions": ["id"],
    "series": ["id", "instance_count", "version", "last_association_id", "rejected_count"],
    "instances": ["id", "series_id", "series_version", "size", "association_id"],
    "jobs": ["id", "series_id", "series_version", "attempts", "failures"],
    "rejections": ["id", "note_series_id", "note_version"],
    "routing_decisions": ["id", "series_id", "version"],
    "sends": ["id", "series_id", "series_version", "attempts", "instance_count", "sent_count"],
    "series_completions": ["id", "series_id", "version", "instance_count", "failures"],
    "send_attempts": ["id", "send_id", "status", "sent"],
    "send_items": ["id", "send_id", "instance_id", "status"],
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, columns in _INTEGERS.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
        # A SERIAL's sequence is itself 32-bit; BIGSERIAL's is not.
        sequence = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table}
        ).scalar_one_or_none()
        if sequence is not None:
            op.execute(f"ALTER SEQUENCE {sequence} AS bigint")


def downgrade() -> None:
    raise NotImplementedError("the index migrates forward only; restore a backup instead")
