"""web console: accounts (argon2 hashes) and sign-in attempts (rate limits)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 15:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('police', 'coordinator', 'admin', name='webrole', native_enum=False, length=32), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('session_epoch', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_web_accounts_person_id_people'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_accounts')),
    sa.UniqueConstraint('person_id', name=op.f('uq_web_accounts_person_id')),
    sa.UniqueConstraint('username', name=op.f('uq_web_accounts_username'))
    )
    op.create_table('web_sign_in_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Enum('ok', 'wrong', 'locked', name='pinoutcome', native_enum=False, length=32), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['web_accounts.id'], name=op.f('fk_web_sign_in_attempts_account_id_web_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sign_in_attempts'))
    )
    with op.batch_alter_table('web_sign_in_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sign_in_attempts_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_sign_in_attempts_ip'), ['ip'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_sign_in_attempts_username'), ['username'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('web_sign_in_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_sign_in_attempts_username'))
        batch_op.drop_index(batch_op.f('ix_web_sign_in_attempts_ip'))
        batch_op.drop_index(batch_op.f('ix_web_sign_in_attempts_at'))
    op.drop_table('web_sign_in_attempts')
    op.drop_table('web_accounts')
