"""`curl` against the deployed event endpoint's Lambda, on the emulators.

API Gateway is played by a small HTTP server on loopback that hands each request to the
endpoint's Lambda as an HTTP API (payload 2.0) event, exactly as the harness does; what it
publishes goes through the emulated bus and its rules to the functions' queues. A real
``curl`` with a valid key starts the runs its event triggers; an invalid key or signature
starts nothing and the answer says why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.ingress.endpoint import IngressRequest
from runtime.testing import Harness
from runtime.webhooks import Stripe
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

shop = App("curlshop")
shop.webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
              secrets={"STRIPE_WEBHOOK_SECRET": "secretsmanager:curlshop/stripe"})


@shop.function(id="fulfil", trigger=TriggerEvent("shop/order.placed"))
def fulfil(ctx: Context) -> Any:
    return ctx.step.run("ship", lambda: ctx.event.data["order"])


@shop.function(id="paid", trigger=TriggerEvent("stripe/webhook"))
def paid(ctx: Context) -> Any:
    return ctx.event.data["type"]


class _Gateway(ThreadingHTTPServer):
    backend: AwsBackend


class _Handler(BaseHTTPRequestHandler):
    server: _Gateway

    def _answer(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size) if size else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.backend.post(IngressRequest(self.command, self.path, headers, body))
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the answers."""


@pytest.fixture
def gateway(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, str]]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_curl")
    h, backend = deploy_for_cli(shop, aws, monkeypatch)  # `stepkit keys ... --aws` too
    server = _Gateway(("127.0.0.1", 0), _Handler)
    server.backend = backend
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield h, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        h.close()


def _curl(*args: str) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_curl_with_a_valid_key_starts_the_runs_and_a_bad_one_starts_nothing(
        gateway: tuple[Harness, str]) -> None:
    h, url = gateway
    key = h.create_key("curl")
    event = '{"name": "shop/order.placed", "data": {"order": "o-curl"}, "id": "evt-curl"}'
    status, body = _curl("-X", "POST", f"{url}/e/{key}", "-H", "content-type: application/json",
                         "-d", event)
    assert (status, body) == (200, {"ids": ["evt-curl"], "status": 200})
    status, body = _curl("-X", "POST", f"{url}/e/{key[:-1]}x", "-d", event)
    assert status == 401 and "unknown event key" in body["error"]
    h.settle()
    assert [r.output for r in h.runs("fulfil")] == ["o-curl"]


def test_curl_with_a_stripe_signature_starts_its_run_once(gateway: tuple[Harness, str]) -> None:
    h, url = gateway
    payload = '{"id": "evt_curl", "type": "charge.succeeded"}'
    at = int(h.clock.now())
    mac = hmac.new(b"whsec_curl", f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    for _ in range(2):
        status, body = _curl("-X", "POST", f"{url}/webhooks/stripe", "-H",
                             f"Stripe-Signature: t={at},v1={mac}", "--data-binary", payload)
        assert (status, body["ids"]) == (200, ["stripe-evt_curl"])
    status, body = _curl("-X", "POST", f"{url}/webhooks/stripe", "-H",
                         f"Stripe-Signature: t={at},v1={'0' * 64}", "--data-binary", payload)
    assert status == 401 and "signature" in body["error"]
    h.settle()
    assert [r.output for r in h.runs("paid")] == ["charge.succeeded"]


def test_the_readmes_curl_example_runs_as_written(gateway: tuple[Harness, str]) -> None:
    """Its `stepkit keys create ... --aws` line makes the key its curl line posts with."""
    import re
    import shlex
    from pathlib import Path

    from click.testing import CliRunner

    from runtime.cli import cli

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S)
                 if "$EVENT_API_URL/e/$EVENT_KEY" in b)
    command = re.search(r"^curl .*?(?<!\\)\n", block, re.S | re.M)
    expected = re.search(r"^# (\{.*\})$", block, re.M)
    assert command is not None and expected is not None
    h, url = gateway
    create = re.search(r"^\.venv/bin/stepkit (keys create .*?)\s+#", block, re.M)
    assert create is not None
    made = CliRunner().invoke(cli, shlex.split(create.group(1)))
    assert made.exit_code == 0, made.output
    key = re.search(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", made.output)
    assert key is not None, made.output
    out = subprocess.run(["bash", "-c", command.group(0).rstrip() + " -sS"], capture_output=True,
                         text=True, check=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "EVENT_API_URL": url,
                              "EVENT_KEY": key.group(0)}).stdout
    assert json.loads(out) == json.loads(expected.group(1))
    h.settle()
    assert [r.output for r in h.runs("fulfil")] == ["o1"]
