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
    # Plain ADD COLUMN, never a batch rebuild: on SQLite a rebuild drops and re-creates ``transcripts``,
    # and with foreign keys on that cascades into ``transcript_terms``: the whole blind index went.
    op.add_column("transcripts", sa.Column("engine", sa.String(20), nullable=False, server_default="vosk"))
    op.add_column("transcripts", sa.Column("language", sa.String(5), nullable=True))
    op.add_column("transcripts", sa.Column("uncertain", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Native DROP COLUMN (SQLite >= 3.35, PostgreSQL): no table rebuild, for the same reason.
    for column in ("uncertain", "language", "engine"):
        op.drop_column("transcripts", column)
