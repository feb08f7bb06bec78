"""The admin's tools on the command line: persons and zones (list, show, edit, deactivate, roles)."""

from __future__ import annotations

import argparse


def register_person_actions(person: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the admin's actions to the ``person`` command (called by ``ivr.commands.directory``)."""


def register_zone_actions(zone: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the admin's actions to the ``zone`` command (called by ``ivr.commands.directory``)."""
