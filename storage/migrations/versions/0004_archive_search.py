"""archive search: full-text index over transcripts and typed message texts

SQLite: two FTS5 tables with *external content* (``transcripts`` and ``messages`` hold the only
copy of the text, so a purge really removes it) kept in sync by triggers.
PostgreSQL: GIN expression indexes on ``to_tsvector('simple', ...)``; queries must use the very
same expressions (see ``ivr.archive.store``) for the planner to use them.

Caution for later migrations: on SQLite, a batch operation that *recreates* ``transcripts`` or
``messages`` (copy, drop, rename) drops their triggers with the old table; such a migration must
create the triggers below again (``ivr.archive.store`` tests check that the index follows the tables).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00.000000
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# unicode61 with diacritics removed: "église" finds "eglise", "één" finds "een" (nl/fr/de text).
_TOKENIZER = "unicode61 remove_diacritics 2"

_SQLITE_UP = [
    (f"CREATE VIRTUAL TABLE transcripts_fts USING fts5(text, content='transcripts', content_rowid='id', "
     f"tokenize='{_TOKENIZER}')"),
    (f"CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id', "
     f"tokenize='{_TOKENIZER}')"),
    # External-content FTS5 must be told the *old* values to forget them ('delete' command).
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
    # Messages without typed text are indexed as NULL (no terms), exactly as 'rebuild' does.
    """CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
         INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    """CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
         INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
       END""",
    """CREATE TRIGGER messages_fts_au AFTER UPDATE OF text ON messages BEGIN
         INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
         INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    # Index what is already there.
    "INSERT INTO transcripts_fts(transcripts_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]

_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS messages_fts_au",
    "DROP TRIGGER IF EXISTS messages_fts_ad",
    "DROP TRIGGER IF EXISTS messages_fts_ai",
    "DROP TRIGGER IF EXISTS transcripts_fts_au",
    "DROP TRIGGER IF EXISTS transcripts_fts_ad",
    "DROP TRIGGER IF EXISTS transcripts_fts_ai",
    "DROP TABLE IF EXISTS messages_fts",
    "DROP TABLE IF EXISTS transcripts_fts",
]

_POSTGRES_UP = [
    ("CREATE INDEX ix_transcripts_text_search ON transcripts "
     "USING gin (to_tsvector('simple'::regconfig, text))"),
    ("CREATE INDEX ix_messages_text_search ON messages "
     "USING gin (to_tsvector('simple'::regconfig, coalesce(text, '')))"),
]

_POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_messages_text_search",
    "DROP INDEX IF EXISTS ix_transcripts_text_search",
]


def _statements(up: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return _SQLITE_UP if up else _SQLITE_DOWN
    if dialect == "postgresql":
        return _POSTGRES_UP if up else _POSTGRES_DOWN
    raise NotImplementedError(f"archive search is not implemented for {dialect}")


def upgrade() -> None:
    for statement in _statements(up=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(up=False):
        op.execute(statement)
