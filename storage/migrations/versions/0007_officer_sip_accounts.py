"""officers' own SIP accounts: a username and the digest HA1 (never the password) per officer

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 09:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('officer_sip_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('ha1', sa.String(length=32), nullable=False),
    sa.Column('realm', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_officer_sip_accounts_person_id_people'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_officer_sip_accounts')),
    sa.UniqueConstraint('person_id', name=op.f('uq_officer_sip_accounts_person_id')),
    sa.UniqueConstraint('username', name=op.f('uq_officer_sip_accounts_username'))
    )


def downgrade() -> None:
    op.drop_table('officer_sip_accounts')
