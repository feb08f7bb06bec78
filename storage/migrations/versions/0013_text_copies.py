"""SMS and e-mail copies, opt-outs and the contact ladder (issue 17)

- ``people``: ``email``, ``channels`` (the member's own choice), ``calls_opt_out_at``,
  ``sms_opt_out_at``, ``email_opt_out_at``;
- ``police_zones``: ``urgent_channels``, ``preventive_channels``, ``ladder_sms``, ``ladder_after_s``;
- ``campaigns``: ``copies_planned_at`` (a campaign's copies at the start are planned once);
- ``text_copies``: one SMS or e-mail copy per member, channel and campaign, written before it is sent;
- ``sms_replies``: what members sent back.

Plain ADD COLUMN only (no batch rebuild: on SQLite a rebuild cascades through foreign keys).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("people", sa.Column("email", sa.String(254), nullable=True))
    op.add_column("people", sa.Column("channels", sa.String(40), nullable=True))
    for column in ("calls_opt_out_at", "sms_opt_out_at", "email_opt_out_at"):
        op.add_column("people", sa.Column(column, _TS, nullable=True))
    op.add_column("police_zones", sa.Column("urgent_channels", sa.String(40), nullable=True))
    op.add_column("police_zones", sa.Column("preventive_channels", sa.String(40), nullable=True))
    op.add_column("police_zones", sa.Column("ladder_sms", sa.Boolean(), nullable=True))
    op.add_column("police_zones", sa.Column("ladder_after_s", sa.Float(), nullable=True))
    op.add_column("campaigns", sa.Column("copies_planned_at", _TS, nullable=True))
    op.create_table(
        "text_copies",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", name="fk_text_copies_campaign_id_campaigns"),
                  nullable=False),
        sa.Column("person_id", sa.Integer(), sa.ForeignKey("people.id", name="fk_text_copies_person_id_people"),
                  nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("sending_at", _TS, nullable=True),
        sa.Column("sent_at", _TS, nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("failed_at", _TS, nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retry_at", _TS, nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("provider_ref", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_text_copies"),
        sa.UniqueConstraint("campaign_id", "person_id", "channel", name="uq_text_copies_campaign_id"),
    )
    op.create_index("ix_text_copies_campaign_id", "text_copies", ["campaign_id"])
    op.create_index("ix_text_copies_person_id", "text_copies", ["person_id"])
    op.create_index("ix_text_copies_status", "text_copies", ["status"])
    op.create_table(
        "sms_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("from_e164", sa.String(20), nullable=False),
        sa.Column("text", sa.String(160), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", name="fk_sms_replies_campaign_id_campaigns"),
                  nullable=True),
        sa.Column("gateway_ref", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sms_replies"),
        sa.UniqueConstraint("gateway_ref", name="uq_sms_replies_gateway_ref"),
    )
    op.create_index("ix_sms_replies_at", "sms_replies", ["at"])
    op.create_index("ix_sms_replies_from_e164", "sms_replies", ["from_e164"])


def downgrade() -> None:
    op.drop_table("sms_replies")
    op.drop_table("text_copies")
    for table, column in (("campaigns", "copies_planned_at"),
                          ("police_zones", "ladder_after_s"), ("police_zones", "ladder_sms"),
                          ("police_zones", "preventive_channels"), ("police_zones", "urgent_channels"),
                          ("people", "email_opt_out_at"), ("people", "sms_opt_out_at"),
                          ("people", "calls_opt_out_at"), ("people", "channels"), ("people", "email")):
        op.drop_column(table, column)
