"""A local, protocol-faithful Bailian app-completion server for tests and demos.

:class:`BailianSimulator` serves ``POST {base}/apps/{app_id}/completion`` on loopback the
way the real service does (see the protocol reference): the same SSE framing byte for
byte (``id:``/``event:``/``:HTTP_STATUS/200``/``data:`` with no space after the colons),
``finish_reason`` as the *string* ``"null"`` until the final ``"stop"``, cumulative or
incremental text, server-side ``session_id`` memory, DashScope error bodies, and the
in-band ``HTTP 200`` + ``event:error`` answer to a bad app id. :class:`Fault` injects the
failures a client must survive: HTTP errors, in-stream errors, cut and truncated streams,
stalls, one-byte drips, malformed and oversized events, and HTML pages from a proxy.
Every request is recorded as a :class:`SimRequest`.

It needs nothing beyond aiohttp and starts in a few milliseconds, so every test can have
its own::

    import aiohttp
    from tyqw.testing import BailianSimulator, Fault

    async def test_retry_after_is_sent() -> None:
        async with BailianSimulator() as sim, aiohttp.ClientSession() as http:
            sim.inject(Fault.http(429, retry_after=2))
            async with http.post(
                sim.url_for(),
                json={"input": {"prompt": "hi"}},
                headers={"Authorization": f"Bearer {sim.api_key}"},
            ) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "2"
                assert (await resp.json())["code"] == "Throttling"

The intended use with tyqw itself::

    from tyqw import Session

    async with BailianSimulator() as sim:
        async with Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url, state_dir=tmp_path
        ) as s:
            reply = await s.send("hi")

Where the reference is unsure, the simulator takes the tolerant reading and says so: an
unknown or expired ``session_id`` silently starts a new conversation under a newly minted
id, and the stream's connection is kept alive after the final event (the response ends
with a normal chunked terminator) so clients can reuse it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["BailianSimulator", "Fault", "SimRequest", "default_reply", "run_offline"]

logger = logging.getLogger("tyqw.testing")

#: ``reply(prompt, history) -> text``; history is the earlier ``(user, assistant)`` turns.
ReplyFunc = Callable[[str, list[tuple[str, str]]], str]

FaultKind = Literal[
    "http",
    "stream_error",
    "cut",
    "truncate",
    "stall",
    "drip",
    "malformed",
    "content_type",
    "oversized",
    "headers_stall",
]

DEFAULT_APP_ID = "5f1a7c0e9d2b4e6f8a3c1b7d9e0f2a4c"

_ROUTE = re.compile(r".*/apps/([^/]*)/completion/?")
_APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SSE_TYPE = "text/event-stream;charset=UTF-8"
_JSON_TYPE = "application/json"
_KEEPALIVE = b":\n\n"

# (code, message) per HTTP status, from the error-code table (protocol reference §6.2).
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidParameter", "Required body invalid, please check the request body format."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("NotFound", "The requested resource was not found."),
    408: ("RequestTimeOut", "Request timed out, please try again later."),
    429: ("Throttling", "Requests throttling triggered."),
    500: (
        "InternalError",
        "An internal error has occured, please try again later or contact service support.",
    ),
    502: ("ServiceUnavailable", "Bad gateway, please try again later."),
    503: ("ServiceUnavailable", "Service unavailable, please try again later."),
    504: ("GatewayTimeout", "Gateway timeout, please try again later."),
}

_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _status_error(status: int, code: str | None, message: str | None) -> tuple[str, str]:
    default_code, default_message = _STATUS_ERRORS.get(status, ("", ""))
    if not default_code:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        default_code, default_message = phrase.replace(" ", ""), f"{phrase}."
    return code or default_code, message or default_message


def _dumps(obj: Any) -> str:
    # Compact, single-line, UTF-8 as on the wire; json escapes any newline inside strings.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _frame(event_id: int, event: str, status: int, data: str, *, end: bool = True) -> bytes:
    tail = "\n\n" if end else "\n"
    return f"id:{event_id}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}{tail}".encode()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; build it with a classmethod and pass it to ``sim.inject``.

    ``after`` counts the normal ``result`` events sent before the fault strikes; if it
    is past the end of the stream the fault strikes after the final event. On a
    non-streaming request the stream faults act on the one JSON body instead (see each
    constructor). Example::

        sim.inject(Fault.stream_error(after=2, code="DataInspectionFailed"))
        sim.inject(Fault.cut(after=1), times=3)
    """

    kind: FaultKind
    after: int = 0
    status: int = 500
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    keepalive: float | None = None
    data: str = ""
    media_type: str = ""
    body: bytes = b""
    size: int = 0

    def __post_init__(self) -> None:
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if self.keepalive is not None and self.keepalive <= 0:
            raise ValueError("keepalive must be > 0")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")

    @classmethod
    def http(
        cls,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """Answer with an HTTP error and a DashScope JSON body ``{code,message,request_id}``.

        ``code``/``message`` default per status (429 ``Throttling``, 500 ``InternalError``
        ...); ``retry_after`` sets ``Retry-After`` (seconds), ``retry_after_ms`` sets
        ``retry-after-ms``. Applies before any request validation, like a gateway::

            sim.inject(Fault.http(429, retry_after=1.0))
            sim.inject(Fault.http(403, "Workspace.AccessDenied", "Workspace access denied."))
        """
        if status < 400:
            raise ValueError("Fault.http needs an error status (400-599)")
        return cls(
            "http",
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def stream_error(
        cls, after: int = 0, status: int = 500, code: str | None = None, message: str | None = None
    ) -> Fault:
        """Send ``after`` result events, then an ``event:error`` frame, then end.

        The frame is ``id:<n>\\nevent:error\\n:HTTP_STATUS/<status>\\ndata:{...}\\n`` with
        no closing blank line, as captured from the real service. On a non-streaming
        request: an HTTP ``status`` error with that JSON body::

            sim.inject(Fault.stream_error(after=3, status=400, code="DataInspectionFailed"))
        """
        return cls("stream_error", after=after, status=status, code=code, message=message)

    @classmethod
    def cut(cls, after: int = 0) -> Fault:
        """Send ``after`` result events, then close the TCP connection mid-body.

        No chunked terminator is sent, so the client sees a broken payload. On a
        non-streaming request the connection closes before any response::

            sim.inject(Fault.cut(after=2))
        """
        return cls("cut", after=after)

    @classmethod
    def truncate(cls, after: int = 0) -> Fault:
        """Send ``after`` result events, then end the response cleanly without ``stop``.

        On a non-streaming request: the first half of the JSON body, then a clean end::

            sim.inject(Fault.truncate(after=2))
        """
        return cls("truncate", after=after)

    @classmethod
    def stall(cls, seconds: float, after: int = 0, keepalive: float | None = None) -> Fault:
        """Send headers and ``after`` events, go quiet for ``seconds``, then carry on.

        With ``keepalive=x`` the quiet period carries an SSE comment ``:\\n\\n`` every ``x``
        seconds. Stops at once when the client goes away. On a non-streaming request:
        wait before answering::

            sim.inject(Fault.stall(30, after=1))  # trips a 1 s idle-read timeout
        """
        return cls("stall", after=after, seconds=seconds, keepalive=keepalive)

    @classmethod
    def drip(cls, after: int = 0) -> Fault:
        """Send ``after`` events normally, then the rest one byte per write.

        For testing parsers against every possible split::

            sim.inject(Fault.drip())
        """
        return cls("drip", after=after)

    @classmethod
    def malformed(cls, after: int = 1, data: str = "{not json") -> Fault:
        """After ``after`` events, send one extra ``result`` event with this ``data``.

        ``data`` must be one line; ``'{"foo":1}'`` gives valid JSON without ``output``.
        The stream then continues normally (later ids shift by one). On a
        non-streaming request: ``data`` is the whole 200 body::

            sim.inject(Fault.malformed(after=1, data='{"foo":1}'))
        """
        if "\n" in data or "\r" in data:
            raise ValueError("data must be a single line")
        return cls("malformed", after=after, data=data)

    @classmethod
    def content_type(
        cls,
        content_type: str = "text/html",
        body: bytes = _BAD_GATEWAY_PAGE,
        status: int = 200,
    ) -> Fault:
        """Answer with this status, content type and body instead of the API's reply.

        Defaults to an nginx "502 Bad Gateway" HTML page sent with status 200, the way a
        misbehaving proxy does::

            sim.inject(Fault.content_type("text/plain", b"upstream timed out", status=504))
        """
        return cls("content_type", status=status, media_type=content_type, body=body)

    @classmethod
    def oversized(cls, size: int, after: int = 0) -> Fault:
        """After ``after`` events, send one extra event whose JSON data is ``size`` bytes.

        It is a valid, non-final event with a huge ``output.text``; the stream then
        continues. On a non-streaming request: a ``size``-byte JSON body::

            sim.inject(Fault.oversized(2**20))
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        return cls("oversized", after=after, size=size)

    @classmethod
    def headers_stall(cls, seconds: float) -> Fault:
        """Accept the request but send nothing, not even headers, for ``seconds``.

        Then answer normally. Stops at once when the client goes away::

            sim.inject(Fault.headers_stall(30))  # trips a timeout before headers
        """
        return cls("headers_stall", seconds=seconds)


# --------------------------------------------------------------------------- records


@dataclass(slots=True, eq=False)
class SimRequest:
    """One request the simulator received, appended to ``sim.requests`` on arrival.

    ``session_id`` is the id the response used (None if it was rejected), ``done`` is
    set when the server is finished with the request however that happened, and
    ``disconnected`` is true if the client went away before the response ended::

        await asyncio.wait_for(sim.requests[-1].done.wait(), 1)
        assert sim.requests[-1].disconnected
        assert sim.requests[-1].body["input"]["prompt"] == "hi"
    """

    method: str
    path: str
    app_id: str | None
    headers: dict[str, str]
    body: Any
    raw_body: bytes = field(repr=False)
    sse: bool
    request_id: str
    session_id: str | None = None
    fault: Fault | None = None
    disconnected: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


# --------------------------------------------------------------------------- default bot

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_ZH_NAME = re.compile(r"我(?:叫|的名字(?:是|叫))\s*([^\s，。！？、；：,.!?;:「」“”\"']{1,20})")
_EN_NAME = re.compile(r"\b(?:my name is|my name's|call me)\s+([^\s,.!?;:\"]{1,40})", re.I)
_ZH_ASK = re.compile(r"我叫什么|我的名字(?:是|叫)?什么|我是谁|(?:记得|知道)我的名字")
_EN_ASK = re.compile(
    r"\bwhat(?:'s| is) my name\b|\bwho am i\b|\b(?:know|remember) my name\b", re.I
)
_ZH_HELLO = re.compile(r"^(?:你好|您好|嗨|哈喽|早上好|下午好|晚上好)")
_EN_HELLO = re.compile(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b", re.I)


def _name_in(text: str) -> str | None:
    if _ZH_ASK.search(text) or _EN_ASK.search(text):
        return None
    match = _ZH_NAME.search(text) or _EN_NAME.search(text)
    return match.group(1) if match else None


def default_reply(prompt: str, history: list[tuple[str, str]]) -> str:
    """The built-in bot: deterministic, bilingual, and visibly aware of the conversation.

    It greets, remembers a name told with "我叫X" / "my name is X", answers "我叫什么名字"
    / "what's my name" with it, and otherwise repeats the turn number, the prompt and the
    previous prompt. Chinese replies when the prompt has CJK characters::

        >>> default_reply("what's my name?", [("my name is Ada", "Nice to meet you")])
        'Your name is Ada. You told me earlier in this conversation.'
    """
    said = prompt.strip()
    zh = bool(_CJK.search(said))
    known = next((n for user, _ in reversed(history) if (n := _name_in(user))), None)
    if _ZH_ASK.search(said) or _EN_ASK.search(said):
        if known:
            if zh:
                return f"你叫{known}。你在前面的对话里告诉过我，我一直记着呢。"
            return f"Your name is {known}. You told me earlier in this conversation."
        if zh:
            return "你还没告诉我你的名字呢。说一句「我叫……」，我就会记住。"
        return "You haven't told me your name yet. Say \"my name is ...\" and I'll remember it."
    if name := _name_in(said):
        if zh:
            return f"很高兴认识你，{name}！我记住你的名字了，之后可以问我「我叫什么名字」。"
        return f"Nice to meet you, {name}! I'll remember your name; ask me \"what's my name?\"."
    if _ZH_HELLO.search(said) or _EN_HELLO.search(said):
        if zh:
            who = f"，{known}" if known else ""
            return f"你好{who}！我是百炼应用的本地模拟器，可以陪你测试多轮对话。想聊点什么？"
        who = f", {known}" if known else ""
        return (
            f"Hello{who}! I'm the local Bailian simulator, here to help you test "
            "multi-turn chat. What shall we talk about?"
        )
    turn = len(history) + 1
    previous = history[-1][0].strip() if history else None
    if zh:
        rest = f"上一句你说的是「{previous}」。" if previous else "这是我们对话的第一句。"
        return f"第{turn}轮：你说「{said}」。{rest}"
    rest = f' Before that you said "{previous}".' if previous else " This is where we start."
    return f'Turn {turn}: you said "{said}".{rest}'


# --------------------------------------------------------------------------- internals


class _Reject(Exception):
    """A request-level error; ``inband`` ones become an SSE error frame on SSE requests."""

    def __init__(self, status: int, code: str, message: str, *, inband: bool = True) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inband = status, code, message, inband


def _invalid(message: str) -> _Reject:
    return _Reject(400, "InvalidParameter", message)


_BAD_BODY = "Required body invalid, please check the request body format."


@dataclass(slots=True)
class _Conversation:
    history: list[tuple[str, str]]
    last_used: float


@dataclass(slots=True)
class _Turn:
    request_id: str
    session_id: str
    prompt: str
    history: list[tuple[str, str]]
    text: str
    incremental: bool
    thoughts: list[dict[str, Any]] | None
    doc_references: list[dict[str, Any]] | None
    workflow: str | None
    input_tokens: int
    conversation: _Conversation | None


class _Exchange:
    """The response side of one request: what was started, and how to write to it."""

    __slots__ = ("request", "resp")

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.resp = web.StreamResponse(status=status, headers=headers)
        await self.resp.prepare(self.request)

    async def send(self, data: bytes) -> None:
        assert self.resp is not None
        await self.resp.write(data)

    async def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            await self.send(data[i : i + 1])
            await asyncio.sleep(0)  # let each byte leave as its own segment

    async def end(self) -> web.StreamResponse:
        assert self.resp is not None
        await self.resp.write_eof()
        return self.resp

    def cut(self) -> web.StreamResponse:
        transport = self.request.transport
        if transport is not None:
            transport.close()
        # aiohttp's attempt to finish this response hits the closed transport and is
        # treated as a premature disconnect, so nothing more is written.
        return self.resp or web.Response()


# --------------------------------------------------------------------------- simulator


class BailianSimulator:
    """A local Bailian app-completion server; an async context manager.

    All arguments are keyword-only. ``api_key=None`` accepts any non-empty Bearer key;
    ``app_ids=None`` accepts any id of 1-64 ``[A-Za-z0-9_-]``; ``workspaces`` maps app
    ids to the ``X-DashScope-WorkSpace`` they require (listed apps always exist);
    ``reply(prompt, history) -> str`` writes the answers (default :func:`default_reply`);
    ``chunk_size`` characters go in each event and ``delay`` seconds pass between events;
    sessions expire after ``session_ttl`` idle seconds or ``max_rounds`` turns;
    ``sse_errors="http"`` turns the in-band error frame for rejected streaming requests
    into a plain HTTP 4xx JSON answer. ``reply``, ``chunk_size`` and ``delay`` are also
    plain attributes you may change at any time.

    What it does with a request, in order: a path not ending in ``/apps/{id}/completion``
    is 404 ``NotFound``; a method other than POST is 400; a missing or wrong key is HTTP
    401 ``InvalidApiKey`` even on streams; an unknown app id (400 ``InvalidParameter``), a
    missing workspace (403 ``Workspace.AccessDenied``) and a bad body (400) are answered
    on streaming requests the way the service answers a bad app id, as HTTP 200 with one
    ``event:error`` frame carrying ``:HTTP_STATUS/<n>``. ``X-DashScope-SSE: enable``
    selects SSE. ``parameters.incremental_output``, ``has_thoughts`` (a reasoning thought
    on every event), ``rag_options`` (``doc_references`` on the last third of the events)
    and ``flow_stream_mode`` ``message_format(_plus)`` (``workflow_message`` events, then
    a final ``text`` event) are honoured; other keys are ignored. ``input.messages``,
    when given, is the whole context (a ``prompt`` is appended as the last user turn) and
    the session, though still returned, is neither read nor written. A turn joins its
    session's history only once its final event (or JSON body) was sent::

        async with BailianSimulator(reply=lambda prompt, history: prompt.upper()) as sim:
            url = sim.url_for()  # POST here with Authorization: Bearer {sim.api_key}
            sim.chunk_size = 1
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "sk-simulator",
        app_ids: Iterable[str] | None = None,
        workspaces: Mapping[str, str] | None = None,
        reply: ReplyFunc | None = None,
        chunk_size: int = 4,
        delay: float = 0.0,
        model_id: str = "qwen-plus",
        session_ttl: float = 3600.0,
        max_rounds: int = 50,
        sse_errors: Literal["frame", "http"] = "frame",
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if sse_errors not in ("frame", "http"):
            raise ValueError('sse_errors must be "frame" or "http"')
        self.host = host
        self.port = port
        self._api_key = api_key
        self._workspaces = dict(workspaces or {})
        self._app_ids: frozenset[str] | None = None
        default_app = DEFAULT_APP_ID
        if app_ids is not None:
            ordered = list(app_ids)
            self._app_ids = frozenset(ordered) | self._workspaces.keys()
            default_app = ordered[0] if ordered else next(iter(self._workspaces), default_app)
        self._app_id = default_app
        self.reply: ReplyFunc = reply or default_reply
        self.chunk_size = chunk_size
        self.delay = delay
        self.model_id = model_id
        self.session_ttl = session_ttl
        self.max_rounds = max_rounds
        self._sse_errors = sse_errors
        #: Every request received, in arrival order.
        self.requests: list[SimRequest] = []
        self._faults: deque[Fault] = deque()
        self._sessions: dict[str, _Conversation] = {}
        self._minted = 0
        self._connections = 0
        self._state: Literal["new", "open", "closed"] = "new"
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None
        self._closed = asyncio.Event()
        self._base_url = ""

    # ----------------------------------------------------------------- public surface

    @property
    def api_key(self) -> str:
        """The key to send as ``Authorization: Bearer <key>`` (any key works if None).

        For example::

            headers = {"Authorization": f"Bearer {sim.api_key}"}
        """
        return self._api_key or "sk-simulator"

    @property
    def app_id(self) -> str:
        """An app id the simulator accepts (the first of ``app_ids`` when given).

        For example::

            url = f"{sim.base_url}/apps/{sim.app_id}/completion"
        """
        return self._app_id

    @property
    def base_url(self) -> str:
        """``http://host:port/api/v1`` with no trailing slash; available after start.

        For example::

            Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url)
        """
        if self._state != "open":
            raise RuntimeError("the simulator is not running; call start() first")
        return self._base_url

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted, to prove keep-alive reuse.

        For example::

            assert sim.connections == 1  # two requests over one pooled connection
        """
        return self._connections

    def url_for(self, app_id: str | None = None) -> str:
        """The completion URL for ``app_id`` (default :attr:`app_id`).

        For example::

            await http.post(sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth)
        """
        return f"{self.base_url}/apps/{app_id if app_id is not None else self.app_id}/completion"

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` completion requests (FIFO, one each).

        A fault is taken by the next request that reaches an ``/apps/{id}/completion``
        path, whatever it turns out to be; a request rejected by validation still uses up
        its fault. ``Fault.http``, ``Fault.content_type`` and ``Fault.headers_stall``
        strike before validation, the others shape the reply::

            sim.inject(Fault.http(503), times=2)
            sim.inject(Fault.cut(after=1))  # the third request
        """
        if times < 0:
            raise ValueError("times must be >= 0")
        self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        """Drop every queued fault.

        For example::

            sim.clear_faults()
        """
        self._faults.clear()

    def history(self, session_id: str) -> list[tuple[str, str]] | None:
        """The stored ``(user, assistant)`` turns of a live session, or None.

        For example::

            assert sim.history(sid) == [("我叫小明", "很高兴认识你，小明！...")]
        """
        conversation = self._live(session_id)
        return list(conversation.history) if conversation else None

    def expire_sessions(self, *session_ids: str) -> None:
        """Forget the given sessions (all of them if none are given), as if they expired.

        The next request naming one gets a fresh conversation under a new id::

            sim.expire_sessions(reply.session_id)
        """
        if not session_ids:
            self._sessions.clear()
        for session_id in session_ids:
            self._sessions.pop(session_id, None)

    async def start(self) -> BailianSimulator:
        """Bind and start serving; returns self. Raises RuntimeError if started before.

        For example::

            sim = await BailianSimulator(port=8000).start()
        """
        if self._state != "new":
            raise RuntimeError(f"the simulator cannot be started when {self._state}")
        loop = asyncio.get_running_loop()
        self._web = web_server = web.Server(
            self._handle, handler_cancellation=True, access_log=None
        )

        def protocol_factory() -> RequestHandler:
            self._connections += 1
            return web_server()

        # A deep backlog: hundreds of clients may connect in the same instant.
        self._server = await loop.create_server(
            protocol_factory, self.host, self.port, backlog=2048
        )
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        self.port = bound_port
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._base_url = f"http://{shown}:{bound_port}/api/v1"
        self._state = "open"
        return self

    async def serve_forever(self) -> None:
        """Start if needed, then serve until :meth:`aclose` is called or the task ends.

        For example::

            async with BailianSimulator(port=8000, delay=0.03) as sim:
                print(sim.base_url)
                await sim.serve_forever()
        """
        if self._state == "new":
            await self.start()
        await self._closed.wait()

    async def aclose(self) -> None:
        """Stop listening and cut every open connection; safe to call twice.

        For example::

            await sim.aclose()
        """
        if self._state == "closed":
            return
        self._state = "closed"
        self._closed.set()
        server, web_server = self._server, self._web
        self._server = self._web = None
        if server is not None:
            server.close()
        if web_server is not None:
            # Streams in progress are cut rather than awaited: tests want a fast exit.
            await web_server.shutdown(0.01)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> BailianSimulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- request handling

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        route = _ROUTE.fullmatch(request.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = SimRequest(
            method=request.method,
            path=request.path,
            app_id=route.group(1) if route else None,
            headers=headers,
            body=body,
            raw_body=raw,
            sse=headers.get("x-dashscope-sse", "").strip().lower() == "enable",
            request_id=str(uuid.uuid4()),
        )
        self.requests.append(rec)
        if route and self._faults:
            rec.fault = self._faults.popleft()
        ex = _Exchange(request)
        try:
            return await self._respond(ex, rec)
        except asyncio.CancelledError:
            rec.disconnected = True
            raise
        except ConnectionError:
            rec.disconnected = True
            return ex.resp or web.Response()
        finally:
            rec.done.set()

    async def _respond(self, ex: _Exchange, rec: SimRequest) -> web.StreamResponse:
        fault = rec.fault
        if fault is not None:
            if fault.kind == "http":
                return self._http_fault(rec, fault)
            if fault.kind == "content_type":
                return web.Response(
                    status=fault.status,
                    body=fault.body,
                    headers={"Content-Type": fault.media_type, "x-request-id": rec.request_id},
                )
            if fault.kind == "headers_stall":
                await asyncio.sleep(fault.seconds)
                fault = None
        try:
            if rec.app_id is None:
                raise _Reject(404, *_status_error(404, None, None), inband=False)
            if rec.method != "POST":
                message = f"Request method '{rec.method}' is not supported."
                raise _Reject(400, "InvalidParameter", message, inband=False)
            self._check_access(rec)
            turn = self._make_turn(rec)
        except _Reject as rej:
            return self._reject(rec, rej)
        rec.session_id = turn.session_id
        if rec.sse:
            return await self._stream(ex, turn, fault)
        return await self._single(ex, turn, fault)

    def _check_access(self, rec: SimRequest) -> None:
        scheme, _, key = rec.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or self._api_key not in (None, key):
            raise _Reject(401, "InvalidApiKey", "Invalid API-key provided.", inband=False)
        app_id = rec.app_id or ""
        if self._app_ids is None:
            known = _APP_ID.fullmatch(app_id) is not None
        else:
            known = app_id in self._app_ids
        if not known:
            raise _invalid(
                "Required parameter(AppId) missing or invalid, please check the request "
                "parameters."
            )
        workspace = self._workspaces.get(app_id)
        if workspace is not None and rec.headers.get("x-dashscope-workspace") != workspace:
            raise _Reject(403, "Workspace.AccessDenied", "Workspace access denied.")

    def _make_turn(self, rec: SimRequest) -> _Turn:
        body = rec.body
        if not isinstance(body, dict):
            raise _invalid(_BAD_BODY)
        inp, params = body.get("input"), body.get("parameters")
        if params is None:
            params = {}
        if not isinstance(inp, dict) or not isinstance(params, dict):
            raise _invalid(_BAD_BODY)
        prompt, messages, session_id = (
            inp.get("prompt"),
            inp.get("messages"),
            inp.get("session_id"),
        )
        if prompt is not None and not isinstance(prompt, str):
            raise _invalid("Input prompt must be a string.")
        if session_id is not None and not isinstance(session_id, str):
            raise _invalid("Input session_id must be a string.")
        conversation: _Conversation | None
        if messages:
            prompt, history = _from_messages(messages, prompt)
            session_id, _ = self._session(session_id)
            conversation = None  # messages carry the context; the session is not written
        elif prompt:
            session_id, conversation = self._session(session_id)
            history = list(conversation.history)
        else:
            raise _invalid(
                "Required parameter(prompt or messages) missing or invalid, please check "
                "the request parameters."
            )
        try:
            text = self.reply(prompt, list(history))
            if not isinstance(text, str):
                raise TypeError(f"reply() returned {type(text).__name__}, not str")
        except Exception:
            logger.exception("the simulator's reply function failed")
            raise _Reject(500, *_status_error(500, None, None)) from None
        zh = bool(_CJK.search(prompt))
        rag = params.get("rag_options")
        mode = params.get("flow_stream_mode")
        thoughts = (
            _thoughts(prompt, history, rag, zh) if params.get("has_thoughts") is True else None
        )
        return _Turn(
            request_id=rec.request_id,
            session_id=session_id,
            prompt=prompt,
            history=history,
            text=text,
            incremental=params.get("incremental_output") is True,
            thoughts=thoughts,
            doc_references=_doc_references(rag, zh) if rag is not None else None,
            workflow=mode if mode in ("message_format", "message_format_plus") else None,
            input_tokens=len(prompt) + sum(len(u) + len(a) for u, a in history),
            conversation=conversation,
        )

    # ----------------------------------------------------------------- sessions

    def _live(self, session_id: str) -> _Conversation | None:
        conversation = self._sessions.get(session_id)
        if conversation is not None and self._expired(conversation, time.monotonic()):
            del self._sessions[session_id]
            return None
        return conversation

    def _expired(self, conversation: _Conversation, now: float) -> bool:
        idle = now - conversation.last_used
        return idle > self.session_ttl or len(conversation.history) >= self.max_rounds

    def _session(self, session_id: str | None) -> tuple[str, _Conversation]:
        """The live conversation ``session_id`` names, else a new one under a new id."""
        now = time.monotonic()
        conversation = self._live(session_id) if session_id else None
        if session_id and conversation is not None:
            conversation.last_used = now
            return session_id, conversation
        self._minted += 1
        if self._minted % 1024 == 0:  # sweep expired sessions now and then
            for stale in [k for k, c in self._sessions.items() if self._expired(c, now)]:
                del self._sessions[stale]
        session_id = uuid.uuid4().hex
        conversation = self._sessions[session_id] = _Conversation([], now)
        return session_id, conversation

    def _commit(self, turn: _Turn) -> None:
        if turn.conversation is not None:
            turn.conversation.history.append((turn.prompt, turn.text))
            turn.conversation.last_used = time.monotonic()

    # ----------------------------------------------------------------- responses

    def _json(self, status: int, payload: Any, request_id: str, **extra: str) -> web.Response:
        headers = {**_json_headers(request_id), **extra}
        return web.Response(status=status, body=_dumps(payload).encode(), headers=headers)

    def _reject(self, rec: SimRequest, rej: _Reject) -> web.Response:
        error = {"code": rej.code, "message": rej.message, "request_id": rec.request_id}
        if not (rec.sse and rej.inband and self._sse_errors == "frame"):
            return self._json(rej.status, error, rec.request_id)
        # The captured answer to a bad app id: HTTP 200, one error frame, no blank line.
        return web.Response(
            status=200,
            body=_frame(1, "error", rej.status, _dumps(error), end=False),
            headers={
                "Content-Type": _SSE_TYPE,
                "x-request-id": rec.request_id,
                "x-dashscope-finished": "true",
            },
        )

    def _http_fault(self, rec: SimRequest, fault: Fault) -> web.Response:
        code, message = _status_error(fault.status, fault.code, fault.message)
        extra = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = _number(fault.retry_after)
        if fault.retry_after_ms is not None:
            extra["retry-after-ms"] = _number(fault.retry_after_ms)
        error = {"code": code, "message": message, "request_id": rec.request_id}
        return self._json(fault.status, error, rec.request_id, **extra)

    def _usage(self, turn: _Turn, output_tokens: int) -> dict[str, Any]:
        model = {
            "model_id": self.model_id,
            "input_tokens": turn.input_tokens,
            "output_tokens": output_tokens,
        }
        return {"models": [model]}

    def _payloads(self, turn: _Turn) -> list[dict[str, Any]]:
        """The JSON objects of every ``result`` event, the final ``stop`` one last."""
        text, size = turn.text, self.chunk_size
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        # (output fields, output tokens so far); None: a workflow node event, empty usage.
        steps: list[tuple[dict[str, Any], int | None]] = []
        if turn.workflow == "message_format_plus":
            steps.append(
                ({"workflow_message": _node("Start_1", "开始", "Start", 1, True, "")}, None)
            )
        done = 0
        for seq, piece in enumerate(pieces, 1):
            done += len(piece)
            if turn.workflow:
                node = _node("LLM_1", "大模型1", "LLM", seq, seq == len(pieces), piece)
                steps.append(({"workflow_message": node}, None))
            else:
                steps.append(({"text": piece if turn.incremental else text[:done]}, done))
        steps.append(({"text": "" if turn.incremental and not turn.workflow else text}, len(text)))
        refs_from = len(steps) - max(1, len(steps) // 3)  # citations come in the last third
        payloads = []
        for index, (fields, tokens) in enumerate(steps):
            is_final = index == len(steps) - 1
            output: dict[str, Any] = {
                "session_id": turn.session_id,
                "finish_reason": "stop" if is_final else "null",
                **fields,
            }
            if turn.thoughts is not None:
                output["thoughts"] = turn.thoughts
            if turn.doc_references is not None and index >= refs_from:
                output["doc_references"] = turn.doc_references
            usage = {} if tokens is None else self._usage(turn, tokens)
            payloads.append({"output": output, "usage": usage, "request_id": turn.request_id})
        return payloads

    async def _stream(self, ex: _Exchange, turn: _Turn, fault: Fault | None) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        after = fault.after if fault is not None else -1
        finished = kind == "stream_error" and after == 0
        await ex.start(
            200,
            {
                "Content-Type": _SSE_TYPE,
                "x-request-id": turn.request_id,
                "x-dashscope-call-gateway": "true",
                "x-dashscope-timeout": "180",
                "x-dashscope-finished": "true" if finished else "false",
            },
        )
        payloads = self._payloads(turn)
        last = len(payloads) - 1
        after = min(after, len(payloads))
        event_id = 1
        # One pass more than there are events, so that a fault can strike after the last.
        for index in range(len(payloads) + 1):
            if fault is not None and index == after:
                if kind in ("stream_error", "cut", "truncate"):
                    return await self._end_early(ex, turn, fault, event_id)
                if kind == "stall":
                    await self._stall(ex, fault)
                elif kind in ("malformed", "oversized"):
                    data = fault.data if kind == "malformed" else self._oversized(turn, fault)
                    await ex.send(_frame(event_id, "result", 200, data))
                    event_id += 1
            if index > last:
                break
            if index and self.delay:
                await asyncio.sleep(self.delay)
            frame = _frame(event_id, "result", 200, _dumps(payloads[index]))
            if kind == "drip" and index >= after:
                await ex.drip(frame)
            else:
                await ex.send(frame)
            event_id += 1
            if index == last:
                self._commit(turn)
        return await ex.end()

    async def _end_early(
        self, ex: _Exchange, turn: _Turn, fault: Fault, event_id: int
    ) -> web.StreamResponse:
        if fault.kind == "cut":
            return ex.cut()
        if fault.kind == "stream_error":
            code, message = _status_error(fault.status, fault.code, fault.message)
            error = _dumps({"code": code, "message": message, "request_id": turn.request_id})
            await ex.send(_frame(event_id, "error", fault.status, error, end=False))
        return await ex.end()

    async def _stall(self, ex: _Exchange, fault: Fault) -> None:
        if fault.keepalive is None:
            await asyncio.sleep(fault.seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + fault.seconds
        while (left := deadline - loop.time()) > 0:
            if left <= fault.keepalive:
                await asyncio.sleep(left)
                break
            await asyncio.sleep(fault.keepalive)
            await ex.send(_KEEPALIVE)

    def _oversized(self, turn: _Turn, fault: Fault) -> str:
        output = {"session_id": turn.session_id, "finish_reason": "null", "text": ""}
        payload = {"output": output, "usage": self._usage(turn, 0), "request_id": turn.request_id}
        output["text"] = "x" * max(0, fault.size - len(_dumps(payload).encode()))
        return _dumps(payload)

    async def _single(self, ex: _Exchange, turn: _Turn, fault: Fault | None) -> web.StreamResponse:
        """The non-streaming answer: one JSON body, shaped by a fault if one is queued."""
        output: dict[str, Any] = {
            "finish_reason": "stop",
            "session_id": turn.session_id,
            "text": turn.text,
        }
        if turn.thoughts is not None:
            output["thoughts"] = turn.thoughts
        if turn.doc_references is not None:
            output["doc_references"] = turn.doc_references
        payload = {
            "output": output,
            "usage": self._usage(turn, len(turn.text)),
            "request_id": turn.request_id,
        }
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            fault = None
        if fault is None:
            self._commit(turn)
            return self._json(200, payload, turn.request_id)
        if fault.kind == "stream_error":
            code, message = _status_error(fault.status, fault.code, fault.message)
            error = {"code": code, "message": message, "request_id": turn.request_id}
            return self._json(fault.status, error, turn.request_id)
        if fault.kind == "cut":
            return ex.cut()
        if fault.kind in ("drip", "truncate"):
            data = _dumps(payload).encode()
            await ex.start(200, _json_headers(turn.request_id))
            if fault.kind == "drip":
                await ex.drip(data)
                self._commit(turn)
            else:
                await ex.send(data[: len(data) // 2])
            return await ex.end()
        text = fault.data if fault.kind == "malformed" else self._oversized(turn, fault)
        return web.Response(body=text.encode(), headers=_json_headers(turn.request_id))


def _json_headers(request_id: str) -> dict[str, str]:
    return {
        "Content-Type": _JSON_TYPE,
        "x-request-id": request_id,
        "x-dashscope-finished": "true",
    }


def _from_messages(messages: Any, prompt: str | None) -> tuple[str, list[tuple[str, str]]]:
    """Split caller-managed ``messages`` (plus an appended ``prompt``) into turns."""
    if not isinstance(messages, list):
        raise _invalid(_BAD_BODY)
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    items = [*messages, {"role": "user", "content": prompt}] if prompt else messages
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise _invalid(_BAD_BODY)
        role, content = item["role"], _content_text(item.get("content"))
        if role == "user":
            if pending is not None:
                turns.append((pending, ""))
            pending = content
        elif role == "assistant":
            turns.append((pending or "", content))
            pending = None
    if pending is None:
        raise _invalid("The input messages do not contain elements with the role of user.")
    return pending, turns


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return "" if content is None else str(content)


def _node(
    node_id: str, name: str, node_type: str, seq: int, completed: bool, content: str
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_name": name,
        "node_type": node_type,
        "node_status": "success" if completed else "executing",
        "node_is_completed": completed,
        "node_msg_seq_id": seq,
        "message": {"role": "assistant", "content": content},
    }


def _thoughts(
    prompt: str, history: list[tuple[str, str]], rag: Any, zh: bool
) -> list[dict[str, Any]]:
    if zh:
        reasoning = f"用户说「{prompt.strip()}」。结合前面{len(history)}轮对话来回答。"
    else:
        reasoning = (
            f'The user said "{prompt.strip()}". Answer using the {len(history)} earlier turns.'
        )
    thoughts: list[dict[str, Any]] = []
    if rag is not None:
        # Real captures carry these as JSON *strings*, not objects.
        thoughts.append(
            {
                "action_type": "agentRag",
                "action": "rag",
                "action_name": "知识检索",
                "action_input_stream": _dumps({"query": prompt}),
                "observation": _dumps([{"docId": "doc-simulator-1", "title": "simulator"}]),
            }
        )
    thoughts.append(
        {
            "action_type": "reasoning",
            "action": "reasoning",
            "action_name": "思考过程",
            "thought": reasoning,
            "response": reasoning,
        }
    )
    return thoughts


def _doc_references(rag: Any, zh: bool) -> list[dict[str, Any]]:
    pipelines = rag.get("pipeline_ids") if isinstance(rag, dict) else None
    index = pipelines[0] if isinstance(pipelines, list) and pipelines else "kb-simulator"
    return [
        {
            "index_id": "1",
            "title": "百炼模拟器说明" if zh else "About the Bailian simulator",
            "doc_id": f"{index}-doc-1",
            "doc_name": "simulator.md",
            "text": "模拟器在本地回答，不连接真实服务。"
            if zh
            else "The simulator answers locally and never reaches the real service.",
            "images": [],
        }
    ]


# --------------------------------------------------------------------------- run_offline

_T = TypeVar("_T")

_ENV_NAMES = (
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_APP_ID",
    "DASHSCOPE_BASE_URL",
    "DASHSCOPE_HTTP_BASE_URL",
    "DASHSCOPE_WORKSPACE",
)


async def run_offline(main: Callable[[], Awaitable[_T]], **simulator_options: Any) -> _T:
    """Await ``main()`` with the ``DASHSCOPE_*`` environment pointing at a simulator.

    For scripts and examples that read their configuration from the environment: while
    ``main()`` runs, ``DASHSCOPE_API_KEY``, ``DASHSCOPE_BASE_URL`` and
    ``DASHSCOPE_APP_ID`` name a fresh :class:`BailianSimulator` (started with
    ``simulator_options``) and ``DASHSCOPE_HTTP_BASE_URL`` / ``DASHSCOPE_WORKSPACE`` are
    unset; afterwards the environment is restored and the simulator stopped. The
    environment is process-wide, so in tests prefer passing ``sim.api_key`` and
    ``sim.base_url`` to ``Session`` explicitly::

        if os.environ.get("DASHSCOPE_API_KEY"):
            asyncio.run(main())               # your Bailian app
        else:
            asyncio.run(run_offline(main))    # no key: the simulator
    """
    async with BailianSimulator(**simulator_options) as sim:
        saved = {name: os.environ.pop(name, None) for name in _ENV_NAMES}
        os.environ["DASHSCOPE_API_KEY"] = sim.api_key
        os.environ["DASHSCOPE_BASE_URL"] = sim.base_url
        os.environ["DASHSCOPE_APP_ID"] = sim.app_id
        try:
            return await main()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
