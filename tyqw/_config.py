"""A Session's configuration, from its arguments and the environment, checked once.

Owns: the one list of ``DASHSCOPE_*`` names (every read of them, by the SDK, the
commands, the relay and the simulator, goes through here) and ``TYQW_STORE``, where the
API key comes from, the base URL policy, proxies, ``TYQW_LOG``, and the request headers.
Everything here raises ``TypeError`` / ``ValueError`` (or ``MissingAPIKeyError``) at
once, so a bad value never reaches the wire.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from ._exceptions import MissingAPIKeyError
from ._history import check_expiry, check_history
from ._options import HEADER_VALUE, check_seconds, check_workspace, kind
from ._version import __version__

if TYPE_CHECKING:
    from ._settings import SessionSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_NAMES",
    "MODEL_PATH",
    "Config",
    "environment_api_key",
    "environment_app_id",
    "environment_store",
    "find_api_key",
    "setup_logging",
    "simulator_environment",
]

logger = logging.getLogger("tyqw")

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"

# The environment, one name each; the official SDKs read the same ones.
API_KEY_ENV = "DASHSCOPE_API_KEY"
API_KEY_FILE_ENV = "DASHSCOPE_API_KEY_FILE_PATH"
APP_ID_ENV = "DASHSCOPE_APP_ID"
BASE_URL_ENVS = ("DASHSCOPE_BASE_URL", "DASHSCOPE_HTTP_BASE_URL")
WORKSPACE_ENV = "DASHSCOPE_WORKSPACE"
LOG_ENV = "TYQW_LOG"
STORE_ENV = "TYQW_STORE"
OFFLINE_KEY = "sk-simulator"
"""The offline simulator's key: a relay given it says, on its page, that it is offline."""
ENV_NAMES = (API_KEY_ENV, API_KEY_FILE_ENV, APP_ID_ENV, *BASE_URL_ENVS, WORKSPACE_ENV)
"""Every ``DASHSCOPE_*`` variable tyqw reads."""

# The official SDK's default key file, read after api_key= and the environment.
DEFAULT_KEY_FILE = Path("~/.dashscope/api_key")

_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_KEY = re.compile(r"[\x21-\x7e]+")


MODEL_PATH = "/services/aigc/text-generation/generation"
"""Where a model is asked, under the base URL (the service's text-generation endpoint)."""


def check_model(model: Any) -> str:
    if not isinstance(model, str) or not _APP_ID.fullmatch(model) or ".." in model:
        raise ValueError(
            f"invalid model {model!r}: expected a model name such as 'qwen-plus' (letters, "
            "digits, '_', '-', '.')"
        )
    return model


def environment_app_id() -> str:
    """``DASHSCOPE_APP_ID``, or ``""``."""
    return os.environ.get(APP_ID_ENV, "")


def environment_api_key() -> str:
    """``DASHSCOPE_API_KEY`` as set (unchecked), or ``""``: the one source of the key for
    a program that must not read key files (``tyqw serve``)."""
    return os.environ.get(API_KEY_ENV, "")


def environment_store() -> str:
    """``TYQW_STORE``, where the ``tyqw`` commands keep conversations, or ``""``."""
    return os.environ.get(STORE_ENV, "")


def simulator_environment(base_url: str, api_key: str, app_id: str) -> dict[str, str]:
    """The variables that point tyqw, the official SDK and the CLI at a simulator: both
    base URL names (the official SDK's ``Application.call`` reads only the second)."""
    return {
        BASE_URL_ENVS[0]: base_url,
        BASE_URL_ENVS[1]: base_url,
        API_KEY_ENV: api_key,
        APP_ID_ENV: app_id,
    }


def check_app_id(app_id: Any) -> str:
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id) or ".." in app_id:
        raise ValueError(
            f"invalid app_id {app_id!r}: expected the application id from the Bailian "
            "console (letters, digits, '_', '-', '.'; no '/', '..', spaces, '?' or '#')"
        )
    return app_id


def resolve_base_url(base_url: Any, allow_insecure_http: bool) -> str:
    url = base_url if base_url is not None else ""
    if not isinstance(url, str):
        raise TypeError(f"base_url must be a str, not {kind(url)}")
    for name in BASE_URL_ENVS:
        url = url or os.environ.get(name, "")
    url = url or DEFAULT_BASE_URL
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(f"base_url is not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ValueError(
            f"refusing to send the API key over plain http to {host}; use https, "
            "or pass allow_insecure_http=True if you really mean it"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not hold credentials; the API key is sent as a header")
    if "?" in url or "#" in url:
        # {base_url}/apps/{app_id}/completion is appended: it would land in the query.
        raise ValueError(f"base_url must not have a query or fragment, got {url!r}")
    if not HEADER_VALUE.fullmatch(url) or " " in url:
        raise ValueError(f"base_url holds characters a URL cannot: {url!r}")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, also in
    brackets): the one loopback check of the SDK, the relay and the CLI."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, a dual-stack socket's peer
    return address.is_loopback


# -- the API key ------------------------------------------------------------------------


def find_api_key(api_key: str | None = None) -> str | None:
    """The API key tyqw would use, or ``None``: ``api_key``, then ``DASHSCOPE_API_KEY``,
    then the file named by ``DASHSCOPE_API_KEY_FILE_PATH``, then ``~/.dashscope/api_key``.

    Whitespace around the key (a key file's newline) is removed; a key that still holds
    characters an HTTP header cannot carry raises ``ValueError`` (the key is not shown).
    """
    if api_key is not None:
        if not isinstance(api_key, str):
            raise TypeError(f"api_key must be a str, not {type(api_key).__name__}")
        return _check_key(api_key, "api_key") if api_key.strip() else None
    key = os.environ.get(API_KEY_ENV, "")
    if key.strip():
        return _check_key(key, API_KEY_ENV)
    named = os.environ.get(API_KEY_FILE_ENV)
    path = Path(named) if named else DEFAULT_KEY_FILE.expanduser()
    try:
        with path.open("rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        if named:
            raise MissingAPIKeyError(
                f"{API_KEY_FILE_ENV} names {path}, which does not exist"
            ) from None
        return None
    except (OSError, ValueError) as exc:
        raise MissingAPIKeyError(f"cannot read the API key file {path}: {exc}") from None
    text = data.decode("utf-8", "replace")
    return _check_key(text, str(path)) if text.strip() else None


def require_api_key(api_key: str | None) -> str:
    key = find_api_key(api_key)
    if key is None:
        raise MissingAPIKeyError(
            f"no API key: pass api_key=..., set {API_KEY_ENV}, or put the key in the file "
            f"named by {API_KEY_FILE_ENV} (default {DEFAULT_KEY_FILE})"
        )
    return key


def _check_key(key: str, source: str) -> str:
    """``key`` without the whitespace around it; ``ValueError`` (naming where the key came
    from and what is wrong, never the key) if a header cannot carry it."""
    stripped = key.strip()
    if _KEY.fullmatch(stripped):
        return stripped
    offset = len(key) - len(key.lstrip())
    position, char = next(
        (i, c) for i, c in enumerate(stripped, offset + 1) if not "!" <= c <= "~"
    )
    names = {"\n": "a newline", "\r": "a carriage return", " ": "a space", "\t": "a tab"}
    if char in names:
        what = names[char]
    elif "\ud800" <= char <= "\udfff":
        what = "an undecodable byte"  # how Python keeps bytes it could not decode
    else:
        what = f"the character U+{ord(char):04X}"
    raise ValueError(
        f"the API key from {source} holds {what} at character {position} of {len(key)}, "
        "which an HTTP header cannot carry; set it to the key alone (the key is not shown)"
    )


# -- logging ------------------------------------------------------------------------------

_logging_set_up = False


def setup_logging() -> None:
    """``TYQW_LOG=debug|info`` adds a stderr handler to the ``tyqw`` logger, once."""
    global _logging_set_up
    if _logging_set_up:
        return
    _logging_set_up = True
    level = os.environ.get(LOG_ENV, "").strip().upper()
    if level not in ("DEBUG", "INFO"):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


# -- the resolved configuration of a Session ---------------------------------------------


class Config:
    """A Session's settings, resolved and checked: what every turn reads.

    Holds the authorization header, so its repr shows none of it.
    """

    __slots__ = (
        "_headers",
        "app_id",
        "base_url",
        "connect_timeout",
        "deadline",
        "expiry",
        "history",
        "max_event_size",
        "max_retries",
        "model",
        "proxy",
        "read_timeout",
        "timeout",
        "url",
        "workspace",
    )

    def __init__(self, app_id: str | None, settings: SessionSettings) -> None:
        model = settings.get("model")
        if (app_id is None) == (model is None):
            # ValueError, as Session(None) always raised for an app id that is no id.
            raise ValueError(
                "pass exactly one of app_id (a Bailian application) and model= (a model "
                "such as 'qwen-plus')"
            )
        self.app_id = None if app_id is None else check_app_id(app_id)
        self.model = None if model is None else check_model(model)
        key = require_api_key(settings.get("api_key"))
        self.base_url = resolve_base_url(
            settings.get("base_url"), settings.get("allow_insecure_http", False)
        )
        # workspace="" means "none", even when DASHSCOPE_WORKSPACE is set.
        workspace = settings.get("workspace")
        self.workspace = check_workspace(
            os.environ.get(WORKSPACE_ENV) if workspace is None else workspace
        )
        max_retries = settings.get("max_retries", 2)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        self.max_retries = max_retries
        self.connect_timeout = check_seconds(
            "connect_timeout", settings.get("connect_timeout", 10.0)
        )
        self.read_timeout = check_seconds("read_timeout", settings.get("read_timeout", 120.0))
        deadline = settings.get("deadline")
        self.deadline = None if deadline is None else check_seconds("deadline", deadline)
        max_event_size = settings.get("max_event_size", 16 * 1024 * 1024)
        if isinstance(max_event_size, bool) or not isinstance(max_event_size, int):
            raise TypeError("max_event_size must be an int")
        if max_event_size < 1024:
            raise ValueError("max_event_size must be at least 1024 bytes")
        self.max_event_size = max_event_size
        self.url = (
            f"{self.base_url}/apps/{self.app_id}/completion"
            if self.model is None
            else self.base_url + MODEL_PATH
        )
        self.timeout = self.client_timeout(self.read_timeout)
        self.proxy = _proxy_for(
            self.base_url, settings.get("proxy"), settings.get("trust_env", True)
        )
        # Exchanges kept per conversation (0: none); the service's limits to watch (None: not).
        self.history = check_history(settings.get("history", True))
        self.expiry = check_expiry(settings.get("expiry", True))
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "User-Agent": f"tyqw/{__version__} python/{sys.version_info[0]}.{sys.version_info[1]}",
        }
        if self.workspace is not None:
            headers["X-DashScope-WorkSpace"] = self.workspace
        self._headers = {
            True: {**headers, "Accept": "text/event-stream", "X-DashScope-SSE": "enable"},
            False: {**headers, "Accept": "application/json"},
        }

    def client_timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        # connect covers name resolution, the TCP and TLS handshakes and waiting for a
        # free pooled connection; sock_read is the idle limit while the reply streams.
        return aiohttp.ClientTimeout(
            total=None,
            connect=self.connect_timeout,
            sock_connect=self.connect_timeout,
            sock_read=read_timeout,
        )

    def headers(self, stream: bool, extra: Mapping[str, str]) -> dict[str, str]:
        """The request headers; ``extra`` wins, and an empty workspace removes it."""
        headers = self._headers[stream]
        if not extra:
            return headers
        merged = {**headers, **extra}
        if merged.get("X-DashScope-WorkSpace") == "":
            del merged["X-DashScope-WorkSpace"]
        return merged

    def __repr__(self) -> str:
        return f"<tyqw Config url={self.url!r} workspace={self.workspace!r}>"


def _proxy_for(base_url: str, proxy: str | None, trust_env: bool) -> str | None:
    """The proxy for ``base_url``: ``proxy=``, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY
    from the environment when ``trust_env``; never for a loopback host."""
    host = urlsplit(base_url).hostname or ""
    if is_loopback(host):
        return None
    if proxy is not None:
        if not isinstance(proxy, str) or urlsplit(proxy).scheme not in ("http", "https"):
            raise ValueError("proxy must be an http(s):// URL")
        return proxy
    if not trust_env:
        return None
    proxies = urllib.request.getproxies_environment()
    if urllib.request.proxy_bypass(host):
        return None
    scheme = urlsplit(base_url).scheme
    return proxies.get(scheme) or proxies.get("all") or None
