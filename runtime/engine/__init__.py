"""The pure replay engine: function + run state in, decision out."""

from runtime.engine.context import Context
from runtime.engine.decisions import Decision
from runtime.engine.replay import Limits, backoff, execute

__all__ = ["Context", "Decision", "Limits", "backoff", "execute"]
