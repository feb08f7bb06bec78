"""``binfoon bin test|drill``: drills ("Testbericht BIN-foon") for a whole BIN, now or on a schedule."""

from __future__ import annotations

import argparse


def register_bin_actions(bin_: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the drill actions to the ``bin`` command (called by ``ivr.commands.directory``)."""
