"""Every Python example in the README runs as written (the flow-control one has its own test;
the AWS ones run against the emulators in tests/aws/test_readme_aws.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runtime import App
from runtime.testing import Harness

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def example(containing: str) -> str:
    found = [e for e in examples() if containing in e]
    assert len(found) == 1, f"{len(found)} README examples contain {containing!r}"
    return found[0]


def run_example(source: str, **scope: Any) -> dict[str, Any]:
    scope = dict(scope)
    exec(compile(source, "README.md", "exec"), scope)
    return scope


def test_every_example_is_run_by_a_test() -> None:
    # The markers the tests below (and the flow-control and AWS ones) pick their examples by.
    markers = ["def send_welcome_email", "id=\"charge-card\"", "runtime.send(",
               "def test_welcome", "Harness.aws(app, emulators)",
               "def test_pause_keeps_the_work_for_the_resume", "replay_matching(",
               'app.webhook("stripe"']
    assert sorted(sum(m in e for m in markers) for e in examples()) == [1] * len(examples())


def test_the_writing_functions_example_runs(tmp_path: Path) -> None:
    scope = run_example(example("def send_welcome_email"))
    app: App = scope["app"]
    h = Harness.local(app, path=tmp_path / "db.sqlite3")
    h.send("user/signup", {"user_id": "ada"})
    assert h.only_run("send-welcome-email").step("get-user").output["id"] == "ada"
    h.advance("3d")
    h.send("payment/confirmed", {"user_id": "ada"})
    run = h.only_run("send-welcome-email")
    assert run.status == "Completed" and run.output == {"paid": True}


def test_the_pytest_example_runs_against_the_example_functions(tmp_path: Path) -> None:
    scope = run_example(example("def test_welcome"))
    scope["test_welcome"](tmp_path)


def test_the_pause_example_runs(tmp_path: Path) -> None:
    scope = run_example(example("def test_pause_keeps_the_work_for_the_resume"))
    scope["test_pause_keeps_the_work_for_the_resume"](tmp_path)
    assert scope["synced"] == ["c1"]


def test_the_bulk_replay_example_replays_the_failed_runs(tmp_path: Path) -> None:
    from runtime import Context, TriggerEvent

    app, down = App("billing"), {"api": True}

    @app.function(id="charge", trigger=TriggerEvent("invoice/due"), retries=0)
    def charge(ctx: Context) -> str:
        if down["api"]:
            raise RuntimeError("payment API down")
        return "paid"

    h = Harness.local(app, path=tmp_path / "db.sqlite3")
    for n in range(3):
        h.send("invoice/due", {"n": n})
    since = h.clock.now()
    down["api"] = False
    scope = run_example(example("replay_matching("))
    report = scope["replay_failed"](h.control, "charge", since)
    h.settle()
    assert report.counts == {"replayed": 3}
    assert sorted(r.status.value for r in h.runs("charge")) == ["Completed"] * 3 + ["Failed"] * 3


def test_the_webhook_example_runs(tmp_path: Path, monkeypatch: Any) -> None:
    import hashlib
    import hmac
    import json

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_readme")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "gh_readme")
    scope = run_example(example('app.webhook("stripe"'))
    h = Harness.local(scope["app"], path=tmp_path / "db.sqlite3")
    body = json.dumps({"id": "evt_r1", "type": "invoice.paid",
                       "data": {"object": {"id": "in_r1"}}}).encode()
    at = int(h.clock.now())
    mac = hmac.new(b"whsec_readme", f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    for _ in range(2):  # a retried delivery starts nothing new
        answer = h.post("/webhooks/stripe", raw=body,
                        headers={"Stripe-Signature": f"t={at},v1={mac}"})
        assert (answer.status, answer.body["ids"]) == (200, ["stripe-evt_r1"])
    assert [r.output for r in h.runs("invoice-paid")] == ["in_r1"]
    push = json.dumps({"ref": "refs/heads/main"}).encode()
    sig = hmac.new(b"gh_readme", push, hashlib.sha256).hexdigest()
    answer = h.post("/webhooks/github", raw=push, headers={
        "X-Hub-Signature-256": f"sha256={sig}", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d-1"})
    assert (answer.status, answer.body["ids"]) == (200, ["github-d-1"])
    h.close()
