"""running a BIN: stop and re-notify rounds, drills, one-level BINs, zone settings, PIN resets

- ``campaigns``: ``stopped_at``/``stopped_by`` (a stop: no call starts after it), ``round`` and
  ``round_started_at`` (re-notify: "call again everyone who has not confirmed");
- ``call_attempts.round``: the round an attempt belongs to (1 for every attempt made before);
- ``messages.drill`` (a test message), ``second_approved_by_id``/``second_approved_at``;
- ``bins.one_level``; ``police_zones.max_cps``, ``second_approver``, ``review_max_rounds``;
- ``review_calls.purpose`` (review, notice, approval, escalation); ``people.pin_reset_at``;
- ``drill_schedules``: one recurring drill per BIN.

Plain ADD COLUMN only (no batch rebuild: on SQLite a rebuild cascades through foreign keys).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("stopped_at", _TS, nullable=True))
    op.add_column("campaigns", sa.Column("stopped_by", sa.String(200), nullable=True))
    op.add_column("campaigns", sa.Column("round", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("campaigns", sa.Column("round_started_at", _TS, nullable=True))
    op.add_column("call_attempts", sa.Column("round", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("messages", sa.Column("drill", sa.Boolean(), nullable=False, server_default=sa.false()))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite takes a reference in ADD COLUMN itself; alembic would ask for a batch rebuild.
        op.execute("ALTER TABLE messages ADD COLUMN second_approved_by_id INTEGER REFERENCES people (id)")
    else:
        op.add_column("messages", sa.Column("second_approved_by_id", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_messages_second_approved_by_id_people", "messages", "people",
                              ["second_approved_by_id"], ["id"])
    op.add_column("messages", sa.Column("second_approved_at", _TS, nullable=True))
    op.add_column("bins", sa.Column("one_level", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("police_zones", sa.Column("max_cps", sa.Float(), nullable=True))
    op.add_column("police_zones", sa.Column("second_approver", sa.Boolean(), nullable=False,
                                            server_default=sa.false()))
    op.add_column("police_zones", sa.Column("review_max_rounds", sa.Integer(), nullable=True))
    op.add_column("review_calls", sa.Column("purpose", sa.String(20), nullable=False, server_default="review"))
    op.add_column("people", sa.Column("pin_reset_at", _TS, nullable=True))
    op.create_table(
        "drill_schedules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("bin_id", sa.Integer(), sa.ForeignKey("bins.id", ondelete="CASCADE",
                                                         name="fk_drill_schedules_bin_id_bins"), nullable=False),
        sa.Column("every_months", sa.Integer(), nullable=False),
        sa.Column("next_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drill_schedules"),
        sa.UniqueConstraint("bin_id", name="uq_drill_schedules_bin_id"),
    )


def downgrade() -> None:
    op.drop_table("drill_schedules")
    for table, column in (("people", "pin_reset_at"), ("review_calls", "purpose"),
                          ("police_zones", "review_max_rounds"), ("police_zones", "second_approver"),
                          ("police_zones", "max_cps"), ("bins", "one_level"), ("messages", "second_approved_at"),
                          ("messages", "second_approved_by_id"), ("messages", "drill"), ("call_attempts", "round"),
                          ("campaigns", "round_started_at"), ("campaigns", "round"), ("campaigns", "stopped_by"),
                          ("campaigns", "stopped_at")):
        op.drop_column(table, column)
