"""Large values out of line: step and run outputs over 64 KiB live in S3, not in DynamoDB.

A DynamoDB item holds at most 400 KB, and a write costs a unit per KB, so an output past
:data:`INLINE_MAX_BYTES` is put as an S3 object and the item keeps a reference in its place
(``{"$stepkit_payload": {"key": ..., "bytes": ..., "sha256": ...}}``). Objects are named by
their run and content digest (``runs/<run_id>/<sha256>.json``): putting the same value twice
(a retried commit, a redelivered message) writes the same object, and a commit that loses
its race leaves an object no item refers to, which the bucket's lifecycle rule deletes with
the rest after the retention. Reading checks the digest, so a reference never resolves to
other bytes; a reference that can never resolve (no such object, other bytes, a malformed
reference) is a :class:`BrokenReferenceError`, which reading again cannot mend.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime.errors import StepkitError

#: Outputs larger than this (bytes of JSON) go to S3.
INLINE_MAX_BYTES = 64 * 1024
REF_KEY = "$stepkit_payload"


#: What S3 answers a GetObject of a key that does not exist, to a caller allowed
#: ``s3:ListBucket`` on the bucket, as the stack grants (``infra/constructs/payloads.py``
#: ``LIST_ACTION``); without it S3 would say 403 ``AccessDenied``, which stays a denial.
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})


class PayloadError(StepkitError):
    """An S3 call for a large value failed, or an object is not what its reference says."""

    is_retriable = True


class BrokenReferenceError(PayloadError):
    """A reference that can never be read: no such object, other bytes, or malformed.

    Permanent: a forged or stale reference, not a failure another attempt gets past.
    """

    is_retriable = False


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a reference to an object (as :meth:`S3Payloads.offload` makes)."""
    return isinstance(value, dict) and len(value) == 1 and REF_KEY in value


class S3Payloads:
    """Outputs too large for an item, as objects of the app's payload bucket.

    Args:
        bucket: The bucket (the Lambda's ``STEPKIT_PAYLOAD_BUCKET``).
        client: A boto3 ``s3`` client; by default one is made on first use (a cold start
            that never meets a large output pays nothing for it).
        config: The botocore ``Config`` of the client made on first use (its timeouts).
    """

    def __init__(self, bucket: str, client: Any = None, *, config: Any = None) -> None:
        self.bucket = bucket
        self._client = client
        self._config = config
        self._lock = threading.Lock()  # boto3's default session makes clients unsafely

    @property
    def client(self) -> Any:
        """The S3 client, made on first use."""
        with self._lock:
            if self._client is None:
                import boto3

                self._client = boto3.client("s3", config=self._config)
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
        key, digest = _key_and_digest(ref)
        where = f"s3://{self.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _absent(exc):
                raise BrokenReferenceError(f"{where} does not exist") from exc
            raise PayloadError(f"S3 GetObject of {where} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise PayloadError(f"S3 GetObject of {where} failed: {exc}") from exc
        if hashlib.sha256(body).hexdigest() != digest:
            raise BrokenReferenceError(f"{where} does not match its digest")
        return json.loads(body)


def _key_and_digest(ref: Any) -> tuple[str, str]:
    """A reference's key and digest, or :class:`BrokenReferenceError` if it has none."""
    key = ref.get("key") if isinstance(ref, dict) else None
    digest = ref.get("sha256") if isinstance(ref, dict) else None
    if not isinstance(key, str) or not key or not isinstance(digest, str):
        raise BrokenReferenceError(f"a malformed payload reference (expected a 'key' and a "
                                   f"'sha256' string): {str(ref)[:120]}")
    return key, digest


def _absent(exc: ClientError) -> bool:
    """Whether S3's refusal of a GetObject says there is no such object."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in _ABSENT
