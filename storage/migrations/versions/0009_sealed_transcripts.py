"""Transcripts sealed at rest: the plaintext full-text index over them goes, a blind index comes

The transcript full-text index of 0004 (SQLite FTS5 ``transcripts_fts`` and its triggers; the
PostgreSQL GIN index) held every word in plaintext: it is dropped. ``transcript_terms`` holds, per
transcript, the HMAC tokens of its words (``storage.sealed``). A migration has no key, so it seals
nothing: the service seals plaintext rows at start (``ivr.archive.search.seal_plain_transcripts``)
and search reads unsealed rows directly until then. The index of typed message texts stays.

Downgrade: the plaintext index comes back and is rebuilt from the rows as they are; sealed rows
then index as gibberish (older code cannot open them), so downgrade only a database whose
transcripts are still plaintext, or accept that they are not found by search.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 13:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_SQLITE_DROP = [
    "PRAGMA secure_delete=ON",  # the dropped index's pages are overwritten, not left with its words
    "DROP TRIGGER IF EXISTS transcripts_fts_au",
    "DROP TRIGGER IF EXISTS transcripts_fts_ad",
    "DROP TRIGGER IF EXISTS transcripts_fts_ai",
    "DROP TABLE IF EXISTS transcripts_fts",
]

# As 0004 made them (see there: external content, 'delete' commands, the same tokenizer).
_SQLITE_RESTORE = [
    ("CREATE VIRTUAL TABLE transcripts_fts USING fts5(text, content='transcripts', content_rowid='id', "
     "tokenize='unicode61 remove_diacritics 2')"),
    """CREATE TRIGGER transcripts_fts_ai AFTER INSERT ON transcripts BEGIN
         INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    """CREATE TRIGGER transcripts_fts_ad AFTER DELETE ON transcripts BEGIN
         INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
       END""",
    """CREATE TRIGGER transcripts_fts_au AFTER UPDATE OF text ON transcripts BEGIN
         INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
         INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    "INSERT INTO transcripts_fts(transcripts_fts) VALUES ('rebuild')",
]

_POSTGRES_DROP = ["DROP INDEX IF EXISTS ix_transcripts_text_search"]
_POSTGRES_RESTORE = [("CREATE INDEX ix_transcripts_text_search ON transcripts "
                      "USING gin (to_tsvector('simple'::regconfig, text))")]


def _statements(drop: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return _SQLITE_DROP if drop else _SQLITE_RESTORE
    if dialect == "postgresql":
        return _POSTGRES_DROP if drop else _POSTGRES_RESTORE
    raise NotImplementedError(f"transcript search is not implemented for {dialect}")


def upgrade() -> None:
    for statement in _statements(drop=True):
        op.execute(statement)
    op.create_table('transcript_terms',
    sa.Column('transcript_id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['transcript_id'], ['transcripts.id'],
                            name=op.f('fk_transcript_terms_transcript_id_transcripts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('transcript_id', 'token', name=op.f('pk_transcript_terms'))
    )
    op.create_index(op.f('ix_transcript_terms_token'), 'transcript_terms', ['token'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_transcript_terms_token'), table_name='transcript_terms')
    op.drop_table('transcript_terms')
    for statement in _statements(drop=False):
        op.execute(statement)
