"""Webhook signature schemes, checked against signatures made as each provider documents.

The tests sign with ``hmac`` directly (Stripe: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``;
GitHub: ``sha256=<hex HMAC-SHA256 of the body>``), never with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest

from runtime import ConfigurationError
from runtime.webhooks import GitHub, Hmac, SignatureError, Stripe, Verified, WebhookRequest

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_767_000_000
BODY = json.dumps({"id": "evt_1NqXyZ", "type": "invoice.paid", "data": {"n": 1}}).encode()


def mac(message: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def request(headers: dict[str, str], body: bytes = BODY, source: str = "hooks") -> WebhookRequest:
    # The endpoint hands verifiers lower-cased header names.
    return WebhookRequest(source, {k.lower(): v for k, v in headers.items()}, body)


def refused(verifier: Any, req: WebhookRequest, *, secret: str = SECRET,
            now: float = NOW) -> str:
    with pytest.raises(SignatureError) as info:
        verifier.verify(req, secret, now)
    message = str(info.value)
    assert SECRET not in message and (not secret or secret not in message)
    return message


# Stripe ------------------------------------------------------------------------------------


def stripe_header(t: int = NOW, body: bytes = BODY, secret: str = SECRET) -> str:
    return f"t={t},v1={mac(f'{t}.'.encode() + body, secret).hex()}"


def test_stripe_accepts_its_signature_and_takes_the_event_id() -> None:
    got = Stripe(secret="STRIPE").verify(
        request({"Stripe-Signature": stripe_header()}), SECRET, NOW + 10)
    assert got == Verified(delivery_id="evt_1NqXyZ", timestamp=float(NOW))


def test_stripe_accepts_any_v1_while_a_secret_is_rolled() -> None:
    old = mac(f"{NOW}.".encode() + BODY, "whsec_old").hex()
    header = f"{stripe_header()},v1={old}"
    assert Stripe(secret="S").verify(request({"Stripe-Signature": header}), "whsec_old", NOW)
    assert Stripe(secret="S").verify(request({"Stripe-Signature": header}), SECRET, NOW)


def test_stripe_ignores_v0_and_says_only_v0_was_sent() -> None:
    v0 = mac(f"{NOW}.".encode() + BODY).hex()  # right digest, wrong scheme
    message = refused(Stripe(secret="S"), request({"Stripe-Signature": f"t={NOW},v0={v0}"}))
    assert "no hex v1 signature (schemes found: v0)" in message
    assert v0 not in message


@pytest.mark.parametrize(("req", "secret", "reason"), [
    (request({"Stripe-Signature": stripe_header(secret="whsec_other")}), SECRET,
     "matches the body"),
    (request({"Stripe-Signature": stripe_header()}, body=BODY + b" "), SECRET, "matches the body"),
    (request({"Stripe-Signature": stripe_header(t=NOW + 1).replace(f"t={NOW + 1}", f"t={NOW}")}),
     SECRET, "matches the body"),
    (request({}), SECRET, "the header Stripe-Signature is missing"),
    (request({"Stripe-Signature": "garbage"}), SECRET, "is not 't=<unix>,v1=<hex>'"),
    (request({"Stripe-Signature": "v1=abcd"}), SECRET, "has 0 timestamps"),
    (request({"Stripe-Signature": "t=1.5,v1=abcd"}), SECRET, "expected epoch seconds"),
    (request({"Stripe-Signature": stripe_header()}), "", "the secret 'S' is empty"),
], ids=["wrong-secret", "tampered-body", "tampered-time", "missing", "garbled", "no-t",
        "fractional-t", "empty-secret"])
def test_stripe_refuses(req: WebhookRequest, secret: str, reason: str) -> None:
    assert reason in refused(Stripe(secret="S"), req, secret=secret)


def test_stripe_messages_never_show_the_expected_signature() -> None:
    expected = mac(f"{NOW}.".encode() + BODY + b"x").hex()
    message = refused(Stripe(secret="S"),
                      request({"Stripe-Signature": stripe_header()}, body=BODY + b"x"))
    assert expected not in message and "'S'" in message


@pytest.mark.parametrize(("signed_at", "reason"), [
    (NOW - 301, "301 s old; the tolerance is 300 s"),
    (NOW + 400, "400 s in the future; the tolerance is 300 s"),
])
def test_stripe_refuses_a_time_outside_the_tolerance(signed_at: int, reason: str) -> None:
    req = request({"Stripe-Signature": stripe_header(t=signed_at)})
    message = refused(Stripe(secret="S"), req)
    assert reason in message and "Stripe-Signature" in message
    assert Stripe(secret="S", tolerance="10m").verify(req, SECRET, NOW).timestamp == signed_at


def test_stripe_header_names_are_matched_whatever_their_case() -> None:
    req = WebhookRequest("hooks", {"stripe-signature": stripe_header()}, BODY)
    assert Stripe(secret="S").verify(req, SECRET, NOW).delivery_id == "evt_1NqXyZ"


@pytest.mark.parametrize("body", [b"[1]", b"{\"id\": 7}", b"not json"])
def test_stripe_without_a_string_event_id_has_no_delivery_id(body: bytes) -> None:
    req = request({"Stripe-Signature": stripe_header(body=body)}, body=body)
    assert Stripe(secret="S").verify(req, SECRET, NOW).delivery_id is None


@pytest.mark.parametrize(("options", "message"), [
    ({"secret": ""}, "Stripe(secret=...): the secret's name"),
    ({"secret": "S", "tolerance": 300}, "is a bare number"),
    ({"secret": "S", "tolerance": "5 minutes"}, "invalid duration"),
])
def test_stripe_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Stripe(**options)
    assert message in str(info.value)


def test_stripe_tolerance_takes_a_timedelta() -> None:
    req = request({"Stripe-Signature": stripe_header(t=NOW - 50)})
    assert "50 s old" in refused(Stripe(secret="S", tolerance=timedelta(seconds=49)), req)


# GitHub ------------------------------------------------------------------------------------


def github_headers(body: bytes = BODY, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": f"sha256={mac(body, secret).hex()}", **extra}


def test_github_accepts_its_signature_with_the_delivery_id() -> None:
    req = request(github_headers(**{"X-GitHub-Delivery": "72d3162e-cc78-11e3"}))
    assert GitHub(secret="G").verify(req, SECRET, 0) == Verified(delivery_id="72d3162e-cc78-11e3")


def test_github_without_a_delivery_header_derives_the_id_from_the_signature() -> None:
    first = GitHub(secret="G").verify(request(github_headers()), SECRET, NOW)
    again = GitHub(secret="G").verify(request(github_headers()), SECRET, NOW + 86_000)
    other = GitHub(secret="G").verify(
        request(github_headers(body=b"{}"), body=b"{}"), SECRET, NOW)
    assert first.delivery_id == again.delivery_id != other.delivery_id
    assert first.delivery_id is not None and len(first.delivery_id) == 32


@pytest.mark.parametrize(("headers", "body", "reason"), [
    (github_headers(secret="other"), BODY, "does not match the body"),
    (github_headers(), BODY + b"\n", "does not match the body"),
    ({"X-Hub-Signature-256": mac(BODY).hex()}, BODY, "is not 'sha256=<hex>'"),  # no prefix
    ({"X-Hub-Signature-256": "sha1=" + mac(BODY).hex()}, BODY, "is not 'sha256=<hex>'"),
    ({"X-Hub-Signature-256": "sha256=zz"}, BODY, "is not 'sha256=<hex>'"),
    ({"X-Hub-Signature-256": "sha256=" + mac(BODY).hex()[:40]}, BODY, "is not 'sha256=<hex>'"),
    ({"X-Hub-Signature": "sha1=abcd"}, BODY, "the header X-Hub-Signature-256 is missing"),
], ids=["wrong-secret", "tampered-body", "no-prefix", "sha1", "not-hex", "short", "missing"])
def test_github_refuses(headers: dict[str, str], body: bytes, reason: str) -> None:
    assert reason in refused(GitHub(secret="G"), request(headers, body=body))


# Hmac --------------------------------------------------------------------------------------


def hmac_headers(t: int = NOW, body: bytes = BODY, **extra: str) -> dict[str, str]:
    return {"X-Timestamp": str(t), "X-Signature": mac(f"{t}.".encode() + body).hex(), **extra}


def test_hmac_defaults_sign_the_timestamp_and_body_in_hex() -> None:
    got = Hmac(secret="H").verify(request(hmac_headers(**{"X-Webhook-Id": "d-1"})), SECRET, NOW)
    assert got == Verified(delivery_id="d-1", timestamp=float(NOW))


def test_hmac_base64_with_a_prefix_and_its_own_template() -> None:
    scheme = Hmac(secret="H", header="Webhook-Signature", timestamp_header="Webhook-Timestamp",
                  id_header="Webhook-Id", signed="{id}.{timestamp}.{body}",
                  encoding="base64", prefix="v1,")
    digest = mac(f"msg_1.{NOW}.".encode() + BODY)
    req = request({"Webhook-Signature": "v1," + base64.b64encode(digest).decode(),
                   "Webhook-Timestamp": str(NOW), "Webhook-Id": "msg_1"})
    assert scheme.verify(req, SECRET, NOW) == Verified(delivery_id="msg_1", timestamp=NOW)
    forged = request({**req.headers, "webhook-id": "msg_2"})
    assert "does not match the signed message" in refused(scheme, forged)
    no_prefix = request({**req.headers, "webhook-signature": base64.b64encode(digest).decode()})
    assert "does not start with 'v1,'" in refused(scheme, no_prefix)
    hex_sent = request({**req.headers, "webhook-signature": "v1," + digest.hex()})
    assert "is not v1,<base64 SHA-256 digest>" in refused(scheme, hex_sent)


def test_hmac_over_the_body_alone_derives_the_id_from_the_signature() -> None:
    scheme = Hmac(secret="H", header="X-Sig", timestamp_header=None, id_header=None,
                  signed="{body}", prefix="sha256=")
    headers = {"X-Sig": "sha256=" + mac(BODY).hex().upper()}  # hex in either case
    first = scheme.verify(request(headers), SECRET, NOW)
    again = scheme.verify(request(headers), SECRET, NOW + 10**6)  # no time: never too old
    assert first == again and first.timestamp is None
    assert first.delivery_id == hashlib.sha256(mac(BODY)).hexdigest()[:32]


def test_hmac_template_literals_and_escaped_braces_are_signed_as_written() -> None:
    scheme = Hmac(secret="H", signed="v0:{{{timestamp}}}:{body}")
    headers = {"X-Timestamp": str(NOW),
               "X-Signature": mac(f"v0:{{{NOW}}}:".encode() + BODY).hex()}
    assert scheme.verify(request(headers), SECRET, NOW).timestamp == NOW


@pytest.mark.parametrize(("headers", "reason"), [
    (hmac_headers(t=NOW - 301), "the header x-timestamp was signed at"),
    (hmac_headers(t=NOW - 301), "301 s old; the tolerance is 300 s"),
    (hmac_headers(t=NOW + 301), "301 s in the future"),
    ({**hmac_headers(), "X-Timestamp": str(NOW + 1)}, "does not match the signed message"),
    ({"X-Signature": hmac_headers()["X-Signature"]}, "the header x-timestamp is missing"),
    ({"X-Timestamp": str(NOW)}, "the header x-signature is missing"),
    ({**hmac_headers(), "X-Timestamp": "2026-12-06T00:00:00Z"}, "expected epoch seconds"),
    ({**hmac_headers(), "X-Signature": "not hex"}, "is not <hex SHA-256 digest>"),
], ids=["old-header", "old", "future", "time-changed", "no-time", "no-sig", "iso", "garbled"])
def test_hmac_refuses(headers: dict[str, str], reason: str) -> None:
    assert reason in refused(Hmac(secret="H"), request(headers))


def test_hmac_requires_a_signed_id_header() -> None:
    scheme = Hmac(secret="H", signed="{id}:{body}", timestamp_header=None)
    assert "the header x-webhook-id is missing" in refused(
        scheme, request({"X-Signature": mac(b":" + BODY).hex()}))


@pytest.mark.parametrize(("options", "message"), [
    ({"signed": "{timestamp}"}, "does not name {body}"),
    ({"signed": "{body}"}, "timestamp_header=...): 'x-timestamp' is set but signed="),
    ({"signed": "{timestamp}.{body}", "timestamp_header": None}, "names {timestamp} but "
                                                                  "timestamp_header is None"),
    ({"signed": "{id}.{body}", "timestamp_header": None, "id_header": None},
     "names {id} but id_header is None"),
    ({"signed": "{ts}.{body}"}, "names {ts}; it may name only {timestamp}, {id}, {body}"),
    ({"signed": "{body!r}", "timestamp_header": None}, "names {body}; it may name only"),
    ({"signed": "{body"}, "Hmac(signed=...): '{body'"),
    ({"encoding": "hex64"}, "Hmac(encoding=...): 'hex' or 'base64', got 'hex64'"),
    ({"header": "X Signature"}, "Hmac(header=...): 'X Signature' is not a header name"),
    ({"timestamp_header": ""}, "Hmac(timestamp_header=...): '' is not a header name"),
    ({"tolerance": "forever"}, "Hmac(tolerance=...): invalid duration"),
    ({"secret": None}, "Hmac(secret=...): the secret's name"),
])
def test_hmac_options_are_checked_naming_the_option(options: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Hmac(**{"secret": "H", **options})
    assert message in str(info.value)


def test_verifiers_are_frozen_values() -> None:
    with pytest.raises(AttributeError):
        Stripe(secret="S").secret = "T"  # type: ignore[misc]
