"""Welcome-email drip: welcome now, then after three days check activity and nudge or tip."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import get_user, has_been_active, send_email
from runtime import AwsOptions, Context, TriggerEvent


@app.function(
    id="send-welcome-email",
    trigger=TriggerEvent("user/signup"),
    retries=4,
    # On AWS: the sender address as an environment variable, and the mail API key from SSM
    # (create it first: aws ssm put-parameter --name /demo/email-api-key --type SecureString
    # --value ...). Locally both fall back to development values (see functions/fakes.py).
    aws=AwsOptions(
        environment={"EMAIL_FROM": "welcome@example.com"},
        secrets={"EMAIL_API_KEY": "ssm:/demo/email-api-key"},
    ),
)
def send_welcome_email(ctx: Context) -> dict[str, Any]:
    """Welcome a new user, wait three days, then follow up based on their activity."""
    user = ctx.step.run("get-user", get_user, ctx.event.data["user_id"])
    ctx.step.run("send-welcome", send_email, user["email"], "welcome")
    ctx.step.sleep("wait-3-days", "3d")
    active = ctx.step.run("check-activity", has_been_active, user["id"])
    template = "pro-tips" if active else "come-back"
    ctx.step.run("send-follow-up", send_email, user["email"], template)
    ctx.logger.info("drip finished for %s with %s", user["id"], template)
    return {"user": user["id"], "follow_up": template}
