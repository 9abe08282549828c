"""What the caller and the environment configure, checked once, before any request.

Owns: the one list of ``DASHSCOPE_*`` names, where the API key comes from, the base URL
policy, every option of a turn and where it goes in the request (``input`` or
``parameters``, a header, or the turn itself), and the request headers. Everything here
raises ``TypeError`` / ``ValueError`` (or ``MissingAPIKeyError``) at once, so a bad
value never reaches the wire.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

import aiohttp

from ._exceptions import MissingAPIKeyError
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_NAMES",
    "Config",
    "Options",
    "RagOptions",
    "find_api_key",
    "setup_logging",
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
ENV_NAMES = (API_KEY_ENV, API_KEY_FILE_ENV, APP_ID_ENV, *BASE_URL_ENVS, WORKSPACE_ENV)
"""Every ``DASHSCOPE_*`` variable tyqw reads."""

# The official SDK's default key file, read after api_key= and the environment.
DEFAULT_KEY_FILE = Path("~/.dashscope/api_key")

_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# What may go in an HTTP header value: visible ASCII and spaces, no CR, LF or NUL.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_KEY = re.compile(r"[\x21-\x7e]+")

FlowStreamMode = Literal["full_thoughts", "agent_format", "message_format", "message_format_plus"]
DocReferenceType = Literal["simple", "indexed"]


class RagOptions(TypedDict, total=False):
    """``rag_options``: which knowledge to retrieve from (a plain dict works too).

    Example::

        await session.send("年假怎么算？", rag_options={"pipeline_ids": ["kb-hr"]})
    """

    pipeline_ids: Sequence[str]
    file_ids: Sequence[str]
    tags: Sequence[str]
    metadata_filter: Mapping[str, str]
    structured_filter: Mapping[str, Any]
    session_file_ids: Sequence[str]


class Options(TypedDict, total=False):
    """Keyword options of ``Session.send()`` and ``Session.stream()``.

    Each goes where the Bailian API expects it (the README's Options table says where);
    ``input`` / ``parameters`` dicts are merged in last, for keys tyqw does not know yet.
    ``headers``, ``workspace``, ``read_timeout``, ``deadline`` and ``session_id`` change
    this turn only, never the Session.

    Example::

        await session.send("总结一下", has_thoughts=True, enable_web_search=True,
                           biz_params={"user_prompt_params": {"city": "杭州"}})
    """

    # input (confirmed in dashscope 2.0.2 app/application.py _build_input_parameters
    # and the Java SDK's ApplicationParam.getInput)
    biz_params: Mapping[str, Any]
    memory_id: str
    image_list: Sequence[str]
    file_list: Sequence[str]
    messages: Sequence[Mapping[str, Any]]
    doc_reference_type: DocReferenceType
    doc_tag_codes: Sequence[str]
    # parameters (confirmed in the Java SDK's ApplicationParam.getParameters; the
    # Python SDK passes every other keyword through to parameters)
    has_thoughts: bool
    incremental_output: bool
    rag_options: RagOptions | Mapping[str, Any]
    flow_stream_mode: FlowStreamMode
    enable_thinking: bool
    enable_web_search: bool
    enable_system_time: bool
    enable_premium: bool
    dialog_round: int
    model_id: str
    mcp_servers: Sequence[str]
    temperature: float
    top_p: float
    top_k: int
    seed: int
    # merged last
    input: Mapping[str, Any]
    parameters: Mapping[str, Any]
    # this turn only
    stream: bool
    headers: Mapping[str, str]
    workspace: str | None
    read_timeout: float
    deadline: float | None
    session_id: str


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(isinstance(item, str) for item in value)
    )


def _mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(key, str) for key in value)


def _messages(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(_mapping(item) and isinstance(item.get("role"), str) for item in value)
    )


# name -> (where it goes, check, what the check expects)
_BODY_OPTIONS: dict[str, tuple[Literal["input", "parameters"], Any, str]] = {
    "biz_params": ("input", _mapping, "a dict"),
    "memory_id": ("input", _str, "a str"),
    "image_list": ("input", _strings, "a list of str"),
    "file_list": ("input", _strings, "a list of str"),
    "messages": ("input", _messages, "a list of {'role': ..., 'content': ...} dicts"),
    "doc_reference_type": ("input", _str, "'simple' or 'indexed'"),
    "doc_tag_codes": ("input", _strings, "a list of str"),
    "has_thoughts": ("parameters", _bool, "a bool"),
    "incremental_output": ("parameters", _bool, "a bool"),
    "rag_options": ("parameters", _mapping, "a dict"),
    "flow_stream_mode": ("parameters", _str, "a str"),
    "enable_thinking": ("parameters", _bool, "a bool"),
    "enable_web_search": ("parameters", _bool, "a bool"),
    "enable_system_time": ("parameters", _bool, "a bool"),
    "enable_premium": ("parameters", _bool, "a bool"),
    "dialog_round": ("parameters", _int, "an int"),
    "model_id": ("parameters", _str, "a str"),
    "mcp_servers": ("parameters", _strings, "a list of str"),
    "temperature": ("parameters", _number, "a finite number"),
    "top_p": ("parameters", _number, "a finite number"),
    "top_k": ("parameters", _int, "an int"),
    "seed": ("parameters", _int, "an int"),
}
_CHOICES = {
    "flow_stream_mode": ("full_thoughts", "agent_format", "message_format", "message_format_plus"),
    "doc_reference_type": ("simple", "indexed"),
}
_RAG_OPTIONS = {
    "pipeline_ids": _strings,
    "file_ids": _strings,
    "tags": _strings,
    "session_file_ids": _strings,
    "metadata_filter": _mapping,
    "structured_filter": _mapping,
}
_TURN_OPTIONS = frozenset(
    {"stream", "headers", "workspace", "read_timeout", "deadline", "session_id"}
)


class TurnOptions:
    """One turn's request body and its per-call settings, checked."""

    __slots__ = (
        "body",
        "deadline",
        "headers",
        "incremental",
        "read_timeout",
        "session_id",
        "stream",
    )

    def __init__(self, prompt: str, options: Mapping[str, Any]) -> None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("prompt is empty")
        if not _encodable(prompt):
            raise ValueError("prompt holds a lone surrogate (not valid Unicode text)")
        input_: dict[str, Any] = {"prompt": prompt}
        parameters: dict[str, Any] = {"incremental_output": True}
        self.stream = True
        self.headers: dict[str, str] = {}
        self.read_timeout: float | None = None
        self.deadline: float | Literal[False] | None = False  # False: the Session's
        self.session_id: str | None = None
        for key, value in options.items():
            rule = _BODY_OPTIONS.get(key)
            if rule is not None:
                where, check, expected = rule
                if not check(value):
                    raise TypeError(f"{key} must be {expected}, not {_kind(value)}")
                choices = _CHOICES.get(key)
                if choices is not None and value not in choices:
                    raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
                if key == "rag_options":
                    _check_rag_options(value)
                (input_ if where == "input" else parameters)[key] = value
            elif key in ("input", "parameters"):
                if not _mapping(value):
                    raise TypeError(f"{key} must be a dict with str keys, not {_kind(value)}")
                # Merged last: keys tyqw does not know yet.
                (input_ if key == "input" else parameters).update(value)
            elif key in _TURN_OPTIONS:
                self._turn_option(key, value)
            else:
                raise TypeError(
                    f"unknown option {key!r}; pass keys tyqw does not know as "
                    "input={...} or parameters={...}"
                )
        incremental = parameters.get("incremental_output", True)
        if not isinstance(incremental, bool):
            raise TypeError(f"incremental_output must be a bool, not {_kind(incremental)}")
        self.incremental = incremental
        self.body = {"input": input_, "parameters": parameters}

    def _turn_option(self, key: str, value: Any) -> None:
        if key == "stream":
            if not isinstance(value, bool):
                raise TypeError(f"stream must be a bool, not {_kind(value)}")
            self.stream = value
        elif key == "headers":
            self.headers.update(check_extra_headers(value))
        elif key == "workspace":
            # "" (or None) means no workspace for this turn.
            self.headers["X-DashScope-WorkSpace"] = check_workspace(value) or ""
        elif key == "read_timeout":
            self.read_timeout = check_seconds("read_timeout", value)
        elif key == "deadline":
            self.deadline = None if value is None else check_seconds("deadline", value)
        else:
            self.session_id = check_session_id(value)


def _check_rag_options(value: Mapping[str, Any]) -> None:
    for key, item in value.items():
        check = _RAG_OPTIONS.get(key)
        if check is not None and not check(item):
            raise TypeError(f"rag_options[{key!r}] has the wrong type: {_kind(item)}")


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- caller checks ------------------------------------------------------------------------


def check_app_id(app_id: Any) -> str:
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id) or ".." in app_id:
        raise ValueError(
            f"invalid app_id {app_id!r}: expected the application id from the Bailian "
            "console (letters, digits, '_', '-', '.'; no '/', '..', spaces, '?' or '#')"
        )
    return app_id


def check_workspace(workspace: Any) -> str | None:
    """``None`` and ``""`` mean no workspace."""
    if workspace is None or workspace == "":
        return None
    if not isinstance(workspace, str) or not _WORKSPACE.fullmatch(workspace):
        raise ValueError(
            f"invalid workspace {workspace!r}: expected ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$"
        )
    return workspace


def check_session_id(value: Any) -> str:
    """A conversation id: a non-empty str that can go on the wire and into a file."""
    if not isinstance(value, str):
        raise TypeError(f"session_id must be a str, not {_kind(value)}")
    if not is_session_id(value):
        raise ValueError(
            f"session_id must be 1 to 256 printable characters without spaces, got {value[:80]!r}"
        )
    return value


def is_session_id(value: object) -> bool:
    """True for a usable conversation id (the server's, or the caller's)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 256
        and value.isprintable()
        and not any(ch.isspace() for ch in value)
        and _encodable(value)
    )


def check_seconds(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{label} must be a number of seconds, not {_kind(value)}")
    if not (value > 0 and math.isfinite(value)):  # also refuses NaN and infinity
        raise ValueError(f"{label} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_extra_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str to str, not {_kind(headers)}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, got {name!r}: {_kind(value)}")
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r} is not a valid HTTP header name and value")
        if name.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
            raise ValueError(f"header {name!r} is set by tyqw and cannot be overridden")
        checked[name] = value
    return checked


def resolve_base_url(base_url: Any, allow_insecure_http: bool) -> str:
    url = base_url if base_url is not None else ""
    if not isinstance(url, str):
        raise TypeError(f"base_url must be a str, not {_kind(url)}")
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
            "or allow plain http explicitly (allow_insecure_http=True; the CLI's "
            "--allow-insecure-http) if you really mean it"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not hold credentials; the API key is sent as a header")
    if "?" in url or "#" in url:
        # {base_url}/apps/{app_id}/completion is appended: it would land in the query.
        raise ValueError(f"base_url must not have a query or fragment, got {url!r}")
    if not _HEADER_VALUE.fullmatch(url) or " " in url:
        raise ValueError(f"base_url holds characters a URL cannot: {url!r}")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    key = key.strip()
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"the API key from {source} holds spaces, control characters or non-ASCII "
            "characters, which an HTTP header cannot carry (the key is not shown)"
        )
    return key


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
        "max_event_size",
        "max_retries",
        "proxy",
        "read_timeout",
        "timeout",
        "url",
        "workspace",
    )

    def __init__(
        self,
        app_id: str,
        *,
        api_key: str | None,
        base_url: str | None,
        workspace: str | None,
        max_retries: int,
        connect_timeout: float,
        read_timeout: float,
        deadline: float | None,
        max_event_size: int,
        allow_insecure_http: bool,
        trust_env: bool,
        proxy: str | None,
    ) -> None:
        self.app_id = check_app_id(app_id)
        key = require_api_key(api_key)
        self.base_url = resolve_base_url(base_url, allow_insecure_http)
        # workspace="" means "none", even when DASHSCOPE_WORKSPACE is set.
        self.workspace = check_workspace(
            os.environ.get(WORKSPACE_ENV) if workspace is None else workspace
        )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        self.max_retries = max_retries
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout)
        self.read_timeout = check_seconds("read_timeout", read_timeout)
        self.deadline = None if deadline is None else check_seconds("deadline", deadline)
        if isinstance(max_event_size, bool) or not isinstance(max_event_size, int):
            raise TypeError("max_event_size must be an int")
        if max_event_size < 1024:
            raise ValueError("max_event_size must be at least 1024 bytes")
        self.max_event_size = max_event_size
        self.url = f"{self.base_url}/apps/{self.app_id}/completion"
        self.timeout = self.client_timeout(self.read_timeout)
        self.proxy = _proxy_for(self.base_url, proxy, trust_env)
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
