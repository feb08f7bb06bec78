"""campaigns: member calls, quiet hours, follow-ups, durable confirmations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 08:37:46.358040
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('checkpoints',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_checkpoints'))
    )
    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rank', sa.Enum('primary', 'secondary', name='phonerank', native_enum=False, length=32), nullable=False, server_default=sa.text("'primary'")))
        batch_op.add_column(sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('dial_outcome', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('amd_status', sa.String(length=16), nullable=True))

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('confirmations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('via', sa.String(length=20), nullable=False, server_default=sa.text("'call'")))
        batch_op.alter_column('attempt_id',
               existing_type=sa.VARCHAR(length=36),
               nullable=True)

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.Enum('alert', 'update', 'cancellation', name='messagekind', native_enum=False, length=32), nullable=False, server_default=sa.text("'alert'")))

    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('call_window_start', sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column('call_window_end', sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column('pause_from', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('pause_until', sa.Date(), nullable=True))

    with op.batch_alter_table('police_zones', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_channels', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('police_zones', schema=None) as batch_op:
        batch_op.drop_column('max_channels')

    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('pause_until')
        batch_op.drop_column('pause_from')
        batch_op.drop_column('call_window_end')
        batch_op.drop_column('call_window_start')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('kind')

    with op.batch_alter_table('confirmations', schema=None) as batch_op:
        batch_op.alter_column('attempt_id',
               existing_type=sa.VARCHAR(length=36),
               nullable=False)
        batch_op.drop_column('via')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('not_before')

    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.drop_column('amd_status')
        batch_op.drop_column('dial_outcome')
        batch_op.drop_column('answered_at')
        batch_op.drop_column('rank')

    op.drop_table('checkpoints')
