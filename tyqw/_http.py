"""The aiohttp boundary: reading bounded bodies, and turning aiohttp's failures into tyqw
errors that carry nothing secret.

aiohttp's ``ClientResponseError`` keeps the request's headers (``Authorization: Bearer
sk-...``) in ``request_info``, in ``args`` and in ``history``; its traceback's frames hold
them as local variables; a ``ConnectionKey`` holds a proxy's password. Error reporters
serialize exactly those, so every aiohttp exception tyqw chains as a cause is scrubbed
first.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._exceptions import APIConnectionError, APITimeoutError, ConnectionLostError, TyqwError
from ._scrub import scrub_chain

__all__ = ["read_body", "redacted", "scrub", "unquote_secrets", "wrap"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


async def read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (a response's or, in the relay, a request's);
    what lies past them is never read. Ask for one byte more than you accept to tell a
    body at the limit from one past it."""
    chunks = bytearray()
    while len(chunks) < limit:
        chunk = await content.read(limit - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def redacted(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every credential replaced by ``***``, for logs."""
    return {
        name: ("Bearer ***" if value.startswith("Bearer ") else "***")
        if name.lower() in _SECRET_HEADERS
        else value
        for name, value in headers.items()
    }


def unquote_secrets(error: TyqwError, headers: Mapping[str, str]) -> TyqwError:
    """``error`` with every credential of ``headers`` (the API key) that the server
    quoted back replaced by ``***``, in its message, ``args`` and ``excerpt``; returns
    ``error``. A gateway that echoes the request ("invalid key sk-...") must not put the
    key into an exception, a log line or a relay's answer."""
    secrets = [
        value.split(" ", 1)[-1]
        for name, value in headers.items()
        if name.lower() in _SECRET_HEADERS and len(value.split(" ", 1)[-1]) >= 8
    ]
    for secret in secrets:
        for name in ("message", "excerpt"):
            value = getattr(error, name, None)
            if isinstance(value, str) and secret in value:
                setattr(error, name, value.replace(secret, "***"))
        error.args = tuple(
            arg.replace(secret, "***") if isinstance(arg, str) else arg for arg in error.args
        )
    return error


def scrub(exc: BaseException) -> BaseException:
    """Remove request headers, credentials and tracebacks from ``exc`` and every
    exception chained to it; returns ``exc``."""
    return scrub_chain(exc, _clean)


def _clean(value: Any) -> Any:
    if isinstance(value, URL):
        # A proxy URL keeps its user and password (aiohttp errors name the proxy).
        return value.with_user(None) if value.user or value.password else value
    if isinstance(value, aiohttp.RequestInfo):
        headers = CIMultiDictProxy(CIMultiDict(redacted(value.headers)))
        return aiohttp.RequestInfo(
            _clean(value.url), value.method, headers, _clean(value.real_url)
        )
    if isinstance(value, aiohttp.client_reqrep.ConnectionKey):
        proxy = _clean(value.proxy)
        if value.proxy_auth is None and proxy is value.proxy:
            return value
        key: Any = value
        fields = {"proxy_auth": None, "proxy": proxy}
        if hasattr(key, "_replace"):  # a NamedTuple (aiohttp 3.11 and later)
            return key._replace(**fields)
        names = [a.name for a in key.__attrs_attrs__]  # an attrs class (aiohttp 3.10)
        return type(key)(**{name: fields.get(name, getattr(key, name)) for name in names})
    if isinstance(value, tuple) and any(isinstance(v, aiohttp.ClientResponse) for v in value):
        return ()  # a redirect history: each response keeps its request's headers
    return value


def wrap(exc: BaseException, *, answered: bool, received: int, what: str) -> TyqwError:
    """The tyqw error for an aiohttp failure or timeout. ``answered``: the response had
    started; ``received``: characters of reply text so far; ``what``: the limits, for
    the message (e.g. ``"read_timeout 120s"``)."""
    scrub(exc)
    if isinstance(exc, asyncio.TimeoutError):
        error: TyqwError = APITimeoutError(what)
    elif answered:
        error = ConnectionLostError(
            f"the connection closed before the reply finished; {received} characters received"
        )
    else:
        error = APIConnectionError(_unanswered(exc))
    error.__cause__ = exc
    return error


def _unanswered(exc: BaseException) -> str:
    """What went wrong before an answer, in the user's words: aiohttp's own message
    ("Cannot connect to host h:443 ssl:default [...]") stays in ``__cause__``."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        cause = exc.os_error
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return f"could not connect to the proxy at {where}: {_os_words(cause)}"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            verify = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
            return (
                f"could not make a secure (TLS) connection to {where}: the server's "
                f"certificate was refused ({verify})"
            )
        if isinstance(exc, aiohttp.ClientSSLError) or isinstance(cause, ssl.SSLError):
            return (
                f"could not make a secure (TLS) connection to {where}: it does not answer "
                "in TLS as expected (is it an http:// address?)"
            )
        return f"could not connect to {where}: {_os_words(cause)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the base URL cannot be dialled"
    if isinstance(exc, OSError):
        return f"the network failed before an answer arrived: {_os_words(exc)}"
    return "the network failed before an answer arrived"


def _os_words(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "no such host (its name could not be resolved)"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "the connection was refused (nothing listens there)"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return "the connection failed"
