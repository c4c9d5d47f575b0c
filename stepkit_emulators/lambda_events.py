"""Turn SQS ``ReceiveMessage`` output into the event an SQS-triggered Lambda receives.

moto cannot run Lambdas or event source mappings, so a test harness polls the queue itself
and calls the handler with what Lambda would have passed. Receive with
``MessageSystemAttributeNames=["All"]`` and ``MessageAttributeNames=["All"]`` so every field
below is filled.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

#: System attributes Lambda copies into ``record["attributes"]`` when SQS returns them.
LAMBDA_SQS_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """Map boto3's ``{"DataType", "StringValue"|"BinaryValue"}`` to Lambda's camelCase form."""
    out: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        out["binaryValue"] = base64.b64encode(
            raw if isinstance(raw, bytes) else raw.encode()
        ).decode()
    return out


def sqs_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """Return one Lambda SQS record for one message from ``receive_message``."""
    attributes = message.get("Attributes", {})
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {k: attributes[k] for k in LAMBDA_SQS_ATTRIBUTES if k in attributes},
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def sqs_lambda_event(
    messages: Iterable[Mapping[str, Any]], *, queue_arn: str, region: str
) -> dict[str, Any]:
    """Return ``{"Records": [...]}`` as Lambda's SQS event source mapping would deliver it."""
    return {"Records": [sqs_record(m, queue_arn=queue_arn, region=region) for m in messages]}


#: Content types API Gateway passes to Lambda as text; any other body arrives base64-encoded.
_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/")


def http_api_event(method: str, path: str, headers: Mapping[str, str], body: bytes,
                   *, route_key: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The event an HTTP API (payload format 2.0) passes to its Lambda integration.

    Header names lower-cased, as API Gateway sends them; a text body (JSON, a form, ``text/*``)
    as a string, anything else base64-encoded with ``isBase64Encoded``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    kind = lowered.get("content-type", "").partition(";")[0].strip().lower()
    text = kind.startswith(_TEXT_TYPES)
    try:
        encoded = body.decode("utf-8") if text else None
    except UnicodeDecodeError:
        encoded = None
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": lowered,
        "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "stepkit-harness"},
                           "stage": "$default", "routeKey": route_key},
        "body": encoded if encoded is not None else base64.b64encode(body).decode(),
        "isBase64Encoded": encoded is None,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    return event
