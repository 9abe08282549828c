"""Who is asking, and from where: user tokens, the ``authenticate`` hook, origins, loopback.

The client's ``Authorization: Bearer <token>`` names a user of the relay; it is never
the DashScope key and is never forwarded. Tokens are kept only as SHA-256 digests, so a
lookup compares digests (nothing about a token can be learned from its timing) and a
memory dump holds no usable token. A browser request from a page of another origin is
refused unless that origin is listed (``--cors``), so another site cannot spend the key
through a visitor's browser.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from inspect import isawaitable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from .._config import is_loopback
from ._request import Refused

__all__ = ["ANONYMOUS", "Authenticate", "load_tokens"]

logger = logging.getLogger("tyqw.relay")

Authenticate = Callable[[web.Request], str | Awaitable[str | None] | None]
"""``authenticate(request) -> user name | None`` (or a coroutine function returning it)."""

ANONYMOUS = "local"
"""The one user of a relay without authentication (allowed on loopback only)."""

MIN_TOKEN_LENGTH = 16


def load_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a tokens file: one ``TOKEN USER`` pair per line, ``#`` starts a comment.

    Example file::

        # tokens for tyqw serve
        3b9f0c5e7a2d4f18b6c1e0a9d8f7e6c5  alice
        f1e2d3c4b5a697887766554433221100  bob

    Raises ``ValueError`` naming the line for a malformed entry, a token shorter than
    16 characters or a token listed twice; ``OSError`` if the file cannot be read.
    """
    tokens: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}, line {number}: expected 'TOKEN USER'")
        token, user = words
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{path}, line {number}: a token must be at least {MIN_TOKEN_LENGTH} "
                "characters (try: python3 -c 'import secrets; print(secrets.token_hex(16))')"
            )
        if token in tokens:
            raise ValueError(f"{path}, line {number}: this token is already listed")
        tokens[token] = user
    if not tokens:
        raise ValueError(f"{path}: no tokens in the file")
    return tokens


class TokenTable:
    """Bearer tokens to user names, held as digests."""

    __slots__ = ("_users",)

    def __init__(self, tokens: Mapping[str, str]) -> None:
        for token, user in tokens.items():
            if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"a token must be a string of at least {MIN_TOKEN_LENGTH} characters"
                )
            if not isinstance(user, str) or not user:
                raise ValueError("a user name must be a non-empty string")
        self._users = {_digest(token): user for token, user in tokens.items()}

    def __call__(self, request: web.Request) -> str | None:
        token = bearer(request)
        return None if token is None else self._users.get(_digest(token))


def bearer(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def identify(authenticate: Authenticate, request: web.Request) -> str | None:
    """Run the hook, awaiting it if it is a coroutine; an empty name means nobody."""
    user = authenticate(request)
    if isawaitable(user):
        user = await user
    if user is not None and not isinstance(user, str):
        raise TypeError(f"authenticate() returned {type(user).__name__}, not str or None")
    return user or None


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header value, without the port (``[::1]:80`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def same_origin(origin: str, request: web.Request) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


def peer(request: web.Request) -> str:
    """The address of the socket's other end: ``"unix"`` for a Unix socket, ``""`` once
    the connection is gone.

    Read from the transport, not ``request.remote``, which a middleware may have taken
    from ``X-Forwarded-For``, a header any client can write.
    """
    transport = request.transport
    if transport is None:
        return ""
    name = transport.get_extra_info("peername")
    if isinstance(name, (tuple, list)) and name:
        return str(name[0])
    sock = transport.get_extra_info("socket")
    unix = getattr(socket, "AF_UNIX", None)
    return "unix" if sock is not None and unix is not None and sock.family == unix else ""


def only_loopback(request: web.Request) -> None:
    # Without authentication the relay is for this machine only: the peer's socket
    # address says who is asking (a Host header is whatever the client wrote). The Host
    # header is checked too, which stops DNS rebinding: a page of evil.example whose
    # name now points at 127.0.0.1 still sends "Host: evil.example".
    address = peer(request)
    local = address == "unix" or (bool(address) and is_loopback(address))
    if not local or not is_loopback(host_name(request.host)):
        raise Refused(
            403,
            "AccessDenied",
            "This relay has no authentication and answers only on localhost.",
        )


class FailedAuthentications:
    """Failed authentications counted per client address, in windows of ``window`` s.

    Past ``limit`` failures in a window, that address is refused without its token being
    looked at until the window ends: a guesser gets ``limit`` tries a minute, a user who
    mistyped a token once or twice never notices. Each address is logged once a window
    (its first failure), never with the token.
    """

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}  # address: (window end, failures)

    def wait(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may try now."""
        end, failures = self._windows.get(address, (0.0, 0))
        now = time.monotonic()
        if failures < self.limit or end <= now:
            return None
        return end - now

    def failed(self, address: str) -> None:
        now = time.monotonic()
        end, failures = self._windows.get(address, (0.0, 0))
        if end <= now:
            end, failures = now + self.window, 0
            if len(self._windows) > 10_000:  # forget addresses whose window has ended
                self._windows = {a: w for a, w in self._windows.items() if w[0] > now}
        failures += 1
        self._windows[address] = (end, failures)
        if failures == 1:  # one line per address and window, whatever a guesser does
            logger.warning(
                "tyqw.relay: a failed authentication from %s; its next failures in %gs are "
                "not logged, and after %d of them it is refused until then",
                address or "?",
                self.window,
                self.limit,
            )


def parse_origins(cors: Iterable[str]) -> frozenset[str]:
    origins = (cors,) if isinstance(cors, str) else tuple(cors)
    for origin in origins:
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path
            or origin == "*"
        ):
            raise ValueError(
                f"cors origin {origin!r} must be scheme://host[:port], like https://example.com"
            )
    return frozenset(origins)
