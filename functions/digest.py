"""Daily digest: a cron run fans out one event per user to a per-user function."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import send_email
from runtime import Context, TriggerCron, TriggerEvent

USERS = ["ada", "grace", "linus"]


@app.function(id="daily-digest", trigger=TriggerCron("TZ=Europe/London 0 8 * * *"))
def daily_digest(ctx: Context) -> int:
    """Every morning at 08:00 London time, ask for one digest per user."""
    users = ctx.step.run("list-users", lambda: USERS)
    events = [{"name": "digest/requested", "data": {"user_id": u}} for u in users]
    ctx.step.send_event("fan-out", events)
    return len(events)


@app.function(
    id="send-user-digest",
    trigger=TriggerEvent("digest/requested"),
    concurrency=2,  # the mail provider takes two connections: the rest wait their turn
)
def send_user_digest(ctx: Context) -> dict[str, Any]:
    """Build and send one user's digest."""
    user_id = ctx.event.data["user_id"]
    items = ctx.step.run("collect-items", lambda: [f"{user_id}-news-{i}" for i in range(3)])
    ctx.step.run("send", send_email, f"{user_id}@example.com", "digest")
    return {"user": user_id, "items": len(items)}
