"""A cluster of nodes on one database (issue 14): claims with leases, nodes, shared names.

Sends, jobs and completions to route get the node that claimed them and the lease's
end; associations the node that accepted them; ``nodes`` lists the node processes with
their heartbeats; spool names grow to 128 characters for the node's folder on shared
storage. Rows already there have no owner: free to claim, as on a single node.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_LEASED = ("sends", "jobs", "series_completions")


def upgrade() -> None:
    for table in _LEASED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner", sa.String(length=128), nullable=True))
            batch.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
    with op.batch_alter_table("associations") as batch:
        batch.add_column(sa.Column("node_id", sa.String(length=128), nullable=True))
    with op.batch_alter_table("instances") as batch:
        batch.alter_column(
            "spool_name", type_=sa.String(length=128), existing_type=sa.String(length=64)
        )
    integer = sa.BigInteger() if op.get_bind().dialect.name == "postgresql" else sa.Integer()
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pid", integer, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the index migrates forward only; restore a backup instead")
