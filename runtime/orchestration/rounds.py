"""Messages sent again round after round: each round's next copy is sent once.

A message held while its function is paused (:mod:`runtime.orchestration.pausing`), or kept
while its function is not deployed (:mod:`runtime.orchestration.blocking`), comes back as a
copy of itself, round after round. A queue may deliver any copy twice, so each round claims
a gate first (one conditional write): a copy that finds its round claimed is a duplicate
and ends there, and copies never multiply.

Only a delivery whose earlier one died or failed (the queue delivered it again, or it is a
deferred copy) may send its round's copy after a lost claim: the claim may have landed just
before the death, the send not. It does so until one such send is marked done, marked after
the send, so a send that fails leaves it to the next copy (nothing lost), and copies that
failed cannot keep making copies.

The gates are one partition per message (scope ``<what>:<message id>``): a claim every round
of every held message of a function would take one key's 1,000 WCU/s at 60,000 messages
held a minute apart, and a long pause of a busy function keeps that many.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.orchestration.protocols import GateStore
from runtime.records import GateWrite, Message

#: How long a round's claim is kept: longer than any duplicate of one delivery comes (a
#: queue redelivers within maxReceiveCount visibility timeouts: 5 x 90 min at most).
CLAIM_SECONDS = 2 * 86_400.0


@dataclass(frozen=True)
class RoundClaim:
    """One round of one message, and whether this copy of it sends the round's next copy.

    Args:
        store: Where the claims are gates.
        scope: ``<what>:<message id>`` (see :func:`round_claim`).
        key: The round (and whatever tells one hold of the message from the next).
        at: Now.
    """

    store: GateStore
    scope: str
    key: str
    at: float

    def _gate(self, key: str) -> GateWrite:
        return GateWrite(self.scope, key, {"at": self.at}, 0, self.at + CLAIM_SECONDS)

    def resent(self) -> bool:
        """Whether a copy whose earlier delivery died has sent this round again already."""
        return self.store.gate(self.scope, f"{self.key}/again").state is not None

    def first(self, *, died: bool) -> bool:
        """Whether this copy sends the round's next copy.

        It does when it claimed the round, or when its earlier delivery died and no such copy
        has re-sent the round yet.
        """
        if self.store.put_gate(self._gate(self.key)):
            return True
        return died and not self.resent()

    def sent(self, *, died: bool) -> None:
        """After the send: a copy whose earlier delivery died marks the round re-sent."""
        if died:
            self.store.put_gate(self._gate(f"{self.key}/again"))


def round_claim(store: GateStore, what: str, msg: Message, key: str, at: float) -> RoundClaim:
    """The claim of round ``key`` of ``msg`` held or kept for ``what`` (``paused``, ...)."""
    return RoundClaim(store, f"{what}:{msg.id}", key, at)
