"""Large values out of line: step and run outputs over 64 KiB live in S3, not in DynamoDB.

A DynamoDB item holds at most 400 KB, and a write costs a unit per KB, so an output past
:data:`INLINE_MAX_BYTES` is put as an S3 object and the item keeps a reference in its place
(``{"$stepkit_payload": {"key": ..., "bytes": ..., "sha256": ...}}``). Objects are named by
their run and content digest (``runs/<run_id>/<sha256>.json``): putting the same value twice
(a retried commit, a redelivered message) writes the same object, and a commit that loses
its race leaves an object no item refers to, which the bucket's lifecycle rule deletes with
the rest after the retention. Reading checks the digest, so a reference never resolves to
other bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime.errors import StepkitError

#: Outputs larger than this (bytes of JSON) go to S3.
INLINE_MAX_BYTES = 64 * 1024
REF_KEY = "$stepkit_payload"


class PayloadError(StepkitError):
    """An S3 call for a large value failed, or an object is not what its reference says."""

    is_retriable = True


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a reference to an object (as :meth:`S3Payloads.offload` makes)."""
    return isinstance(value, dict) and len(value) == 1 and REF_KEY in value


class S3Payloads:
    """Outputs too large for an item, as objects of the app's payload bucket.

    Args:
        bucket: The bucket (the Lambda's ``STEPKIT_PAYLOAD_BUCKET``).
        client: A boto3 ``s3`` client; by default one is made on first use (a cold start
            that never meets a large output pays nothing for it).
    """

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        """The S3 client, made on first use."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def offload(self, run_id: str, value: Any) -> Any:
        """``value`` itself if it is small, else a reference to the object now holding it.

        ``run_id`` names the owner: a run, or for an event (and its log and timeline
        entries) the event's id; every object is under ``runs/`` all the same.

        Raises:
            PayloadError: S3 refused or failed the put (retriable: the commit is not made).
        """
        if value is None:
            return None
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        body = text.encode()
        if len(body) <= INLINE_MAX_BYTES:
            return value
        digest = hashlib.sha256(body).hexdigest()
        key = f"runs/{run_id}/{digest}.json"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                   ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise PayloadError(f"run {run_id}: S3 PutObject of a {len(body)}-byte output to "
                               f"s3://{self.bucket}/{key} failed: {exc}") from exc
        return {REF_KEY: {"key": key, "bytes": len(body), "sha256": digest}}

    def resolve(self, value: Any) -> Any:
        """The value a reference stands for (anything else is returned as it is).

        Raises:
            PayloadError: The object cannot be read, or its bytes do not match the digest.
        """
        if not is_ref(value):
            return value
        ref = value[REF_KEY]
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=ref["key"])["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise PayloadError(f"S3 GetObject of s3://{self.bucket}/{ref['key']} failed: "
                               f"{exc}") from exc
        if hashlib.sha256(body).hexdigest() != ref["sha256"]:
            raise PayloadError(f"s3://{self.bucket}/{ref['key']} does not match its digest")
        return json.loads(body)
