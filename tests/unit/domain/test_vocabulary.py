"""The vocabulary lives in the pure domain; storage maps it to columns without changing a stored word."""

from __future__ import annotations

import ast
import enum
from pathlib import Path

import storage.models
from ivr.domain import vocabulary
from ivr.domain.vocabulary import AttemptOutcome

DOMAIN = Path(vocabulary.__file__).parent
ENUMS = ("Language", "Role", "PhoneRank", "Urgency", "MessageStatus", "ReviewMode", "Escalation", "Decision",
         "MessageKind", "MessageSource", "PinOutcome", "CampaignStatus", "AttemptStatus", "AttemptOutcome",
         "WebRole")


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_domain_imports_nothing_of_the_project_but_itself() -> None:
    for path in DOMAIN.glob("*.py"):
        outside = {m for m in _imports(path) if m.split(".")[0] in ("ivr", "storage") and
                   not m.startswith("ivr.domain")}
        assert not outside, f"{path.name} imports {outside}"
        assert not {m for m in _imports(path) if m.split(".")[0] == "sqlalchemy"}, path.name


def test_storage_re_exports_the_same_enums() -> None:
    for name in ENUMS:
        kind = getattr(vocabulary, name)
        assert issubclass(kind, enum.Enum)
        assert getattr(storage.models, name) is kind, name


def test_columns_store_the_values() -> None:
    # The migrations fix these strings in the database: the columns keep storing values, not names.
    for table in storage.models.Base.metadata.sorted_tables:
        for column in table.columns:
            kind = getattr(column.type, "enum_class", None)
            if kind is not None:
                assert list(column.type.enums) == [m.value for m in kind], column


def test_outcomes_compare_equal_to_their_stored_strings() -> None:
    assert AttemptOutcome.VOICEMAIL == "voicemail" and "busy" in {AttemptOutcome.BUSY}
    assert str(AttemptOutcome.NO_ANSWER) == f"{AttemptOutcome.NO_ANSWER}" == "no_answer"
    assert AttemptOutcome("interrupted") is AttemptOutcome.INTERRUPTED
    assert [m.value for m in AttemptOutcome] == [
        "confirmed", "answered_no_key", "voicemail", "busy", "no_answer", "rejected", "congestion", "failed",
        "invalid_number", "cancelled", "expired", "interrupted"]
