"""police line and review

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:03:20.604103

Columns added to existing tables get a server default, so databases with rows upgrade too.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pin_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('caller_id', sa.String(length=32), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Enum('ok', 'wrong', 'locked', name='pinoutcome', native_enum=False, length=32), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_pin_attempts_person_id_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pin_attempts'))
    )
    with op.batch_alter_table('pin_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pin_attempts_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_pin_attempts_caller_id'), ['caller_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pin_attempts_person_id'), ['person_id'], unique=False)

    op.create_table('review_calls',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('e164', sa.String(length=20), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('role', sa.Enum('police_officer', 'coordinator', 'member', 'admin', 'police_approver', name='role', native_enum=False, length=32), nullable=False),
    sa.Column('status', sa.Enum('queued', 'dialing', 'answered', 'ended', name='attemptstatus', native_enum=False, length=32), nullable=False),
    sa.Column('dial_outcome', sa.String(length=20), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dialled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('hangup_cause', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_review_calls_message_id_messages')),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_review_calls_person_id_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_calls'))
    )
    with op.batch_alter_table('review_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_calls_message_id'), ['message_id'], unique=False)

    op.create_table('review_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=True),
    sa.Column('review_call_id', sa.String(length=36), nullable=True),
    sa.Column('decision', sa.Enum('forward_now', 'forward_later', 'reject', name='decision', native_enum=False, length=32), nullable=False),
    sa.Column('deliver_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('via', sa.String(length=20), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_review_decisions_message_id_messages')),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_review_decisions_person_id_people')),
    sa.ForeignKeyConstraint(['review_call_id'], ['review_calls.id'], name=op.f('fk_review_decisions_review_call_id_review_calls')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_decisions')),
    sa.UniqueConstraint('message_id', name=op.f('uq_review_decisions_message_id'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.Enum('phone', 'text', name='messagesource', native_enum=False, length=32), nullable=False, server_default=sa.text("'phone'")))
        batch_op.add_column(sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('submitted_take', sa.Integer(), nullable=True))

    with op.batch_alter_table('police_zones', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_mode', sa.Enum('sequential', 'parallel', name='reviewmode', native_enum=False, length=32), nullable=False, server_default=sa.text("'sequential'")))
        batch_op.add_column(sa.Column('urgent_escalation', sa.Enum('auto_forward', 'police_approver', 'wait', name='escalation', native_enum=False, length=32), nullable=False, server_default=sa.text("'auto_forward'")))

    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('take', sa.Integer(), nullable=False, server_default=sa.text("'1'")))
        batch_op.add_column(sa.Column('speech_s', sa.Float(), nullable=False, server_default=sa.text("'0'")))
        batch_op.add_column(sa.Column('end_reason', sa.String(length=20), nullable=False, server_default=sa.text("''")))



def downgrade() -> None:
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_column('end_reason')
        batch_op.drop_column('speech_s')
        batch_op.drop_column('take')

    with op.batch_alter_table('police_zones', schema=None) as batch_op:
        batch_op.drop_column('urgent_escalation')
        batch_op.drop_column('review_mode')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('submitted_take')
        batch_op.drop_column('submitted_at')
        batch_op.drop_column('source')

    op.drop_table('review_decisions')
    with op.batch_alter_table('review_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_calls_message_id'))

    op.drop_table('review_calls')
    with op.batch_alter_table('pin_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pin_attempts_person_id'))
        batch_op.drop_index(batch_op.f('ix_pin_attempts_caller_id'))
        batch_op.drop_index(batch_op.f('ix_pin_attempts_at'))

    op.drop_table('pin_attempts')
