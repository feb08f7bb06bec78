"""BINfoon storage: SQLAlchemy models, migrations, the audit log. Import it as ``storage``."""
