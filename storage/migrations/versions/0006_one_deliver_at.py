"""one truth for when a message is delivered: messages.deliver_at (review_decisions.deliver_at dropped)

The decision row says who decided what and how; when to deliver is the message's own fact. Both were
written together, so nothing is lost; a message that somehow lacks its time takes the decision's.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 07:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE messages SET deliver_at = (SELECT d.deliver_at FROM review_decisions d WHERE d.message_id = messages.id) "
        "WHERE deliver_at IS NULL AND EXISTS (SELECT 1 FROM review_decisions d "
        "WHERE d.message_id = messages.id AND d.deliver_at IS NOT NULL)")
    with op.batch_alter_table('review_decisions') as batch:
        batch.drop_column('deliver_at')


def downgrade() -> None:
    with op.batch_alter_table('review_decisions') as batch:
        batch.add_column(sa.Column('deliver_at', sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE review_decisions SET deliver_at = (SELECT m.deliver_at FROM messages m "
        "WHERE m.id = review_decisions.message_id) WHERE decision <> 'reject'")
