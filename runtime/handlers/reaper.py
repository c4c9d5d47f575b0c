"""Lambda entry for the run reaper: the state table's stream, filtered to TTL'd run items."""

from __future__ import annotations

import os
from typing import Any

from runtime.backends.aws.reaper import handle
from runtime.backends.aws.resources import ENV_TABLE

_client: Any = None


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """DynamoDB stream entry: delete what is left of each run whose run item TTL deleted.

    Raising fails the batch, which the event source mapping retries, bisects and finally
    sends to its failure queue.
    """
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("dynamodb")
    return {"deleted": handle(_client, os.environ[ENV_TABLE], event)}
