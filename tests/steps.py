"""A stand-in for the chain (``ivr.chain.steps.Chain``) that records the steps it is handed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.review.store import Decided


@dataclass
class StepLog:
    """What the flows, the rounds and the web handed on to the chain, in order."""

    kept: list[tuple[int, int | None]] = field(default_factory=list)
    submissions: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    decisions: list[Decided] = field(default_factory=list)

    def take_kept(self, message_id: int, recording_id: int | None) -> None:
        self.kept.append((message_id, recording_id))

    def submitted(self, message_id: int) -> None:
        self.submissions.append(message_id)

    def written_submitted(self, message_id: int) -> None:
        self.written.append(message_id)

    def decided(self, decided: Decided) -> None:
        self.decisions.append(decided)
