"""An agent loop: think, then act, up to five rounds, each round its own durable steps."""

from __future__ import annotations

from typing import Any

from functions import app
from runtime import Context, TriggerEvent

MAX_ROUNDS = 5


def think(goal: str, history: list[str], round_no: int) -> dict[str, Any]:
    """A stand-in for a model call: decides the next action, finishing after three rounds."""
    if round_no >= 3:
        return {"action": "finish", "answer": f"{goal}: done in {round_no} rounds"}
    return {"action": "search", "query": f"{goal} #{round_no}"}


def act(action: dict[str, Any]) -> str:
    """A stand-in for a tool call."""
    return f"results for {action['query']}"


@app.function(
    id="agent-loop",
    trigger=TriggerEvent("agent/task"),
    # The model API allows 20 new conversations a minute: later tasks start later, none lost.
    throttle={"limit": 20, "period": "1m"},
)
def agent_loop(ctx: Context) -> dict[str, Any]:
    """Alternate think-{i} and act-{i} steps until the model finishes or five rounds pass."""
    goal = ctx.event.data.get("goal", "research")
    history: list[str] = []
    for i in range(MAX_ROUNDS):
        decision = ctx.step.run(f"think-{i}", think, goal, history, i)
        if decision["action"] == "finish":
            return {"answer": decision["answer"], "rounds": i}
        history.append(ctx.step.run(f"act-{i}", act, decision))
    return {"answer": None, "rounds": MAX_ROUNDS}
