"""Reading a request's JSON body within bounds: every malformed body is a 400, never a 500.

The body is counted as it streams in and refused with 413 once it passes the limit (or at once
when ``Content-Length`` says it will), so an oversized POST never sits whole in memory; it is
then parsed by :mod:`runtime.ingress.body`, the rules the event endpoint shares.
"""

from __future__ import annotations

from starlette.requests import Request

from runtime.ingress.body import BodyError, parse_json

__all__ = ["MAX_BODY_BYTES", "BodyError", "parse_json", "read_body"]

#: The largest request body read: four events at the 4 MiB event limit, or many small ones.
MAX_BODY_BYTES = 16 * 1024 * 1024


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body's bytes, counted as they arrive.

    Raises:
        BodyError: 413 once it is over ``limit`` bytes (before reading on).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> BodyError:
    return BodyError(413, f"request body is over the {limit // (1024 * 1024)} MiB limit; "
                          "send fewer or smaller events per request")
