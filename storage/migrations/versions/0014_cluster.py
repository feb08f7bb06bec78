"""A farm of nodes on one PostgreSQL (issue 18)

- ``cluster_nodes``: every ``binfoon serve`` of a farm, its lease and its fencing token (``epoch``);
- ``cluster_leader``: the one row naming the node that runs the farm's single duties (alarms, reviews);
- ``call_attempts``: ``node_id`` and ``fence``, the claim under which the attempt was begun.

Plain ADD COLUMN only (no batch rebuild: on SQLite a rebuild cascades through foreign keys).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("joined_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.Column("lease_until", _TS, nullable=False),
        sa.Column("live_calls", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("left_at", _TS, nullable=True),
        sa.Column("left_why", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cluster_nodes"),
        sa.UniqueConstraint("name", name="uq_cluster_nodes_name"),
    )
    op.create_table(
        "cluster_leader",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_until", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cluster_leader"),
    )
    op.add_column("call_attempts", sa.Column("node_id", sa.Integer(), nullable=True))
    op.add_column("call_attempts", sa.Column("fence", sa.Integer(), nullable=True))
    op.create_index("ix_call_attempts_node_id", "call_attempts", ["node_id"])
    # One call per number across a farm's nodes is checked on every claim.
    op.create_index("ix_call_attempts_e164", "call_attempts", ["e164"])


def downgrade() -> None:
    op.drop_index("ix_call_attempts_e164", "call_attempts")
    op.drop_index("ix_call_attempts_node_id", "call_attempts")
    with op.batch_alter_table("call_attempts") as batch:
        batch.drop_column("fence")
        batch.drop_column("node_id")
    op.drop_table("cluster_leader")
    op.drop_table("cluster_nodes")
