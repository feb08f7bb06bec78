"""PIN attempts name their line (a global limit per line; admins' unlocks), and calls to the
caller-ID lines (BIN call-back, report line) are counted for their rate limits

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 12:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pin_attempts') as batch:
        batch.add_column(sa.Column('line', sa.String(length=20), nullable=True))
        batch.create_index(batch.f('ix_pin_attempts_line'), ['line'], unique=False)
    op.create_table('line_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('line', sa.String(length=20), nullable=False),
    sa.Column('caller_id', sa.String(length=32), nullable=False),
    sa.Column('known', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_line_calls'))
    )
    op.create_index(op.f('ix_line_calls_at'), 'line_calls', ['at'], unique=False)
    op.create_index(op.f('ix_line_calls_caller_id'), 'line_calls', ['caller_id'], unique=False)
    op.create_index(op.f('ix_line_calls_line'), 'line_calls', ['line'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_line_calls_line'), table_name='line_calls')
    op.drop_index(op.f('ix_line_calls_caller_id'), table_name='line_calls')
    op.drop_index(op.f('ix_line_calls_at'), table_name='line_calls')
    op.drop_table('line_calls')
    with op.batch_alter_table('pin_attempts') as batch:
        batch.drop_index(batch.f('ix_pin_attempts_line'))
        batch.drop_column('line')
