"""Who asks for a change: the one shape the features check permissions on (web, command line, phone)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """A person (or the server's operator) asking a feature to act.

    ``label`` is how the audit log names them (``cli:root``, ``web:person:7``, ``phone:person:7``);
    ``person_id`` is ``None`` for the operator at the server's command line, who is trusted like an
    admin (they hold the database already); ``admin`` says whether the person is an admin.
    """

    label: str
    person_id: int | None
    admin: bool = False

    @classmethod
    def operator(cls, label: str) -> Actor:
        """The server's operator at the command line (no ``--as``)."""
        return cls(label, None, True)
