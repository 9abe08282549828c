"""What the relay answers: DashScope error bodies, SSE responses, client-safe errors.

Frames and JSON come from ``tyqw._wire``, the one writer of Bailian's wire format (the
simulator's too). Unlike the service, the relay ends an error frame with the blank line:
spec-following clients (fetch-event-source among them) only dispatch an event at a
blank line, and would otherwise never see the last error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .. import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    StoreError,
    StreamError,
    TyqwError,
)
from .._wire import SSE_TYPE, dumps, error_body, frame
from ._request import Refused

__all__ = ["json_response", "refusal", "start_sse", "upstream_error"]

logger = logging.getLogger("tyqw.relay")


def upstream_error(exc: TyqwError, request_id: str) -> tuple[int, dict[str, str]]:
    """The status and error body a client gets for a turn that failed upstream: the one
    place that decides what of an upstream failure a client may see.

    An error in the service's own JSON (it has a ``code``) is passed on as the service
    worded it. Anything else (an HTML page or text from a gateway, the network, a reply
    tyqw could not read, a store) gets a fixed message and the relay's request id: the
    details may name internal hosts, so they go to the ``tyqw.relay`` log, not to the
    client. The API key never reaches either: tyqw removes it from every error built from
    what a server said.
    """
    if isinstance(exc, APIStatusError) and exc.code:
        body = error_body(exc.code, exc.message, exc.request_id or request_id)
        return exc.status_code, body
    logger.warning("tyqw.relay: turn %s failed upstream: %s", request_id, exc)
    if isinstance(exc, APIStatusError):
        if exc.status_code == 429:
            status, code, message = 429, "Throttling", "The Bailian service is throttling."
        else:
            status, code, message = (
                502,
                "InternalError",
                f"The Bailian service (or a gateway before it) answered HTTP {exc.status_code} "
                "without a Bailian error.",
            )
    elif isinstance(exc, APITimeoutError):
        status, code, message = (
            504,
            "RequestTimeOut",
            "The Bailian service did not answer in time.",
        )
    elif isinstance(exc, APIConnectionError):
        status, code, message = 502, "ServiceUnavailable", "The Bailian service cannot be reached."
    elif isinstance(exc, StreamError):
        status, code, message = (
            502,
            "InternalError",
            "The Bailian service sent a reply the relay cannot read.",
        )
    elif isinstance(exc, StoreError):
        status, code, message = 503, "ServiceUnavailable", "The conversation store is unavailable."
    else:
        status, code, message = 500, "InternalError", "The relay failed to run this turn."
    return status, error_body(code, message, request_id)


async def start_sse(
    request: web.Request, cors: dict[str, str], request_id: str
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": SSE_TYPE,
            # Proxies must pass each event on as it comes: no caching, no transforming
            # (compressing) and, for nginx, no buffering.
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
            "x-request-id": request_id,
            **cors,
        },
    )
    await response.prepare(request)
    return response


def refusal(refused: Refused, request_id: str, sse: bool, cors: dict[str, str]) -> web.Response:
    body = error_body(refused.code, refused.message, request_id)
    if sse and refused.inband:
        # As the service answers a bad request on a stream: HTTP 200, one error frame.
        return web.Response(
            status=200,
            body=frame(1, dumps(body), event="error", status=refused.status),
            headers={
                "Content-Type": SSE_TYPE,
                "Cache-Control": "no-cache, no-transform",
                "x-request-id": request_id,
                **cors,
                **refused.headers,
            },
        )
    return json_response(refused.status, body, {**cors, **refused.headers}, request_id)


def json_response(
    status: int, body: Mapping[str, Any], headers: dict[str, str], request_id: str
) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "x-request-id": request_id,
            **headers,
        },
    )
