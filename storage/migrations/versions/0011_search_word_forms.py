"""archive search knows word forms: the search terms of typed message texts

``messages_fts_terms`` holds, per typed message text, its search terms (``storage.wordforms``: folded
word, Snowball stem in the BIN's language, prefixes, and a version marker), the same on SQLite and
PostgreSQL; ``storage.message_terms`` keeps it in step from Python. Existing texts are indexed here.
Sealed transcripts need the recordings' key, which a migration does not have: the service indexes them
again (word forms added to their blind index) at start (``ivr.archive.search.seal_plain_transcripts``);
until then search reads them directly. 0004's full-text indexes stay (the purge still compacts
``messages_fts``) but search no longer asks them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from storage.message_terms import reindex_messages

    op.create_table(
        "messages_fts_terms",
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("messages.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("term", sa.String(80), primary_key=True),
    )
    op.create_index("ix_messages_fts_terms_term", "messages_fts_terms", ["term"])
    reindex_messages(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_messages_fts_terms_term", table_name="messages_fts_terms")
    op.drop_table("messages_fts_terms")
