"""The pure replay engine: function + run state in, decision out."""

from runtime.engine.context import Context
from runtime.engine.decisions import Decision
from runtime.engine.outcomes import Limits, backoff
from runtime.engine.replay import execute

__all__ = ["Context", "Decision", "Limits", "backoff", "execute"]
