"""The relay's OpenTelemetry: a SERVER span per request that continues the caller's
``traceparent``, so that browser -> relay -> Bailian is one trace (the turn's span is a
child of the request's). The user goes on the span only in the form the operator chose.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from .._telemetry import HTTP_STATUS, active, error_type, server_span, set_error

__all__ = ["TraceUser", "note_user", "tracing"]

TraceUser = Literal["id", "hash"] | Callable[[str], str | None] | None
"""How the relay's span names the user: not at all (``None``, the default), ``"id"``
(``user.id``, as authenticated), ``"hash"`` (``user.hash``, the first 16 hex digits of
its SHA-256), or a function of the user returning the ``user.id`` to record."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The middleware leaves the user's recorder here for the handler: the request's own task
# (and so its context) runs both, and no request key is needed.
_note_user: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "tyqw_relay_note_user", default=None
)


def tracing(trace_user: TraceUser) -> Middleware:
    """The middleware: one SERVER span per request while telemetry is on."""
    if trace_user not in (None, "id", "hash") and not callable(trace_user):
        raise ValueError('trace_user must be None, "id", "hash" or a function of the user')

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if active() is None:
            return await handler(request)  # off: one dict lookup per request
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        attributes = {
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "url.scheme": request.scheme,
        }
        with server_span(f"{request.method} {route}", request.headers, attributes) as span:
            if span is None:
                return await handler(request)
            token = None
            if trace_user is not None:
                token = _note_user.set(lambda user: _note(span, trace_user, user))
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _status(span, exc.status)
                raise
            except Exception as exc:
                set_error(span, error_type(exc))
                raise
            finally:
                if token is not None:
                    _note_user.reset(token)
            _status(span, response.status)
            return response

    return traced


def note_user(user: str) -> None:
    """Put the authenticated user on the request's span, if the operator asked for it."""
    note = _note_user.get()
    if note is not None:
        note(user)


def _note(span: Any, how: TraceUser, user: str) -> None:
    if how == "id":
        span.set_attribute("user.id", user)
    elif how == "hash":
        span.set_attribute("user.hash", hashlib.sha256(user.encode()).hexdigest()[:16])
    elif callable(how):
        value = how(user)
        if value:
            span.set_attribute("user.id", value)


def _status(span: Any, status: int) -> None:
    span.set_attribute(HTTP_STATUS, status)
    if status >= 500:
        set_error(span, str(status))
