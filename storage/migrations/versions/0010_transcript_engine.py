"""Transcripts say which engine made them, in which language, and whether they are trusted

``engine`` ("vosk" or "whisper"), ``language`` (the language the engine was told: the BIN's, never
guessed from the audio) and ``uncertain`` (the recogniser's output looked like a repetition loop or
was cut at the time cap: kept, but not to be taken at its word). Rows from before keep
``engine = 'vosk'`` (the only engine there was), no language, and ``uncertain = false``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transcripts") as batch:
        batch.add_column(sa.Column("engine", sa.String(20), nullable=False, server_default="vosk"))
        batch.add_column(sa.Column("language", sa.String(5), nullable=True))
        batch.add_column(sa.Column("uncertain", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("transcripts") as batch:
        batch.drop_column("uncertain")
        batch.drop_column("language")
        batch.drop_column("engine")
