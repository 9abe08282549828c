"""``Session``: one conversation with a Bailian application.

One streaming code path: ``_Turn.run()`` is an async generator that sends the request,
reads the SSE reply and yields ``Message`` objects. ``Session.stream()`` hands that
iterator to the caller; ``Session.send()`` consumes the same iterator and emits each
item to the pyee handlers, awaiting them in order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import math
import os
import random
import re
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from inspect import isawaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pyee.asyncio import AsyncIOEventEmitter

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    EventTooLargeError,
    HandlerError,
    IncompleteStreamError,
    MissingAPIKeyError,
    SessionClosedError,
    StreamError,
    TyqwError,
    UnexpectedContentTypeError,
    excerpt,
    status_error,
)
from ._models import Message, Reply, _Text, new_message
from ._store import ConversationStore, default_state_dir
from .sse import ServerSentEvent, SSEDecoder

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self, Unpack

__all__ = ["DEFAULT_BASE_URL", "MessageStream", "Options", "Session"]

logger = logging.getLogger("tyqw")

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"

_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HTTP_STATUS = re.compile(r"HTTP_STATUS/(\d{3})")
_JSON_DECODER = json.JSONDecoder()
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_CAP = 60.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_ERROR_BODY_LIMIT = 64 * 1024

Event = Literal["message", "error"]
_EVENTS = ("message", "error")
Handler = TypeVar("Handler", bound=Callable[..., Any])


class Options(TypedDict, total=False):
    """Keyword options of ``Session.send()`` and ``Session.stream()``.

    Each goes where the Bailian API expects it: ``biz_params``, ``memory_id``,
    ``image_list``, ``file_list`` and ``messages`` into ``input``; the rest into
    ``parameters``. ``input`` / ``parameters`` dicts are merged in last, for keys tyqw
    does not know yet. ``stream=False`` asks for one JSON answer instead of SSE.

    Example::

        await session.send("总结一下", has_thoughts=True, biz_params={"city": "杭州"},
                           parameters={"enable_web_search": True})
    """

    has_thoughts: bool
    incremental_output: bool
    biz_params: Mapping[str, Any]
    memory_id: str
    image_list: Sequence[str]
    file_list: Sequence[str]
    rag_options: Mapping[str, Any]
    messages: Sequence[Mapping[str, Any]]
    flow_stream_mode: str
    enable_thinking: bool
    temperature: float
    top_p: float
    top_k: int
    seed: int
    input: Mapping[str, Any]
    parameters: Mapping[str, Any]
    stream: bool


_INPUT_KEYS = frozenset({"biz_params", "memory_id", "image_list", "file_list", "messages"})
_PARAMETER_KEYS = frozenset(
    {
        "has_thoughts",
        "incremental_output",
        "rag_options",
        "flow_stream_mode",
        "enable_thinking",
        "temperature",
        "top_p",
        "top_k",
        "seed",
    }
)


class _Emitter(AsyncIOEventEmitter):
    """pyee's emitter, plus the current handler lists kept ready for the per-message path.

    Registration, ``once`` and removal stay pyee's; tyqw calls the handlers itself so
    that async handlers are awaited in order instead of being scheduled as tasks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.message_handlers: list[Callable[..., Any]] = []
        self.error_handlers: list[Callable[..., Any]] = []

    def _refresh(self) -> None:
        # New lists, never mutated: a turn iterating the old list is not disturbed.
        self.message_handlers = list(self._events.get("message", {}).values())
        self.error_handlers = list(self._events.get("error", {}).values())

    def _add_event_handler(self, event: str, k: Callable[..., Any], v: Callable[..., Any]) -> None:
        super()._add_event_handler(event, k, v)
        self._refresh()

    def _remove_listener(self, event: str, f: Callable[..., Any]) -> None:
        super()._remove_listener(event, f)
        self._refresh()

    def remove_all_listeners(self, event: str | None = None) -> None:
        super().remove_all_listeners(event)
        self._refresh()


class Session:
    """One conversation with a Bailian application.

    The conversation id is stored under ``state_dir`` per ``(app_id, name)``, so a
    script that restarts continues the same conversation. Turns are serialized.

    Example::

        async with Session("YOUR_APP_ID") as session:      # key from DASHSCOPE_API_KEY
            session.on("message", lambda m: print(m.delta, end="", flush=True))
            await session.send("你好，我叫小明")
            await session.send("我叫什么名字？")              # same conversation
            session.clear()                                  # the next send starts anew
    """

    def __init__(
        self,
        app_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        workspace: str | None = None,
        name: str = "default",
        state_dir: str | os.PathLike[str] | None = None,
        http_session: aiohttp.ClientSession | None = None,
        max_retries: int = 2,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        deadline: float | None = None,
        max_event_size: int = 16 * 1024 * 1024,
        allow_insecure_http: bool = False,
    ) -> None:
        if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id) or ".." in app_id:
            raise ValueError(
                f"invalid app_id {app_id!r}: expected the application id from the Bailian "
                "console (letters, digits, '_', '-', '.'; no '/', '..', spaces, '?' or '#')"
            )
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        key = api_key if api_key is not None else os.environ.get("DASHSCOPE_API_KEY", "")
        if not key:
            raise MissingAPIKeyError(
                "no API key: pass api_key=... or set the DASHSCOPE_API_KEY environment variable"
            )
        url = (
            base_url
            or os.environ.get("DASHSCOPE_BASE_URL")
            or os.environ.get("DASHSCOPE_HTTP_BASE_URL")
            or DEFAULT_BASE_URL
        )
        _check_base_url(url, allow_insecure_http)
        # workspace="" means "none", even when DASHSCOPE_WORKSPACE is set.
        if workspace is None:
            workspace = os.environ.get("DASHSCOPE_WORKSPACE")
        ws = workspace or None
        if ws is not None and not _WORKSPACE.fullmatch(ws):
            raise ValueError(
                f"invalid workspace {ws!r}: expected ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        for label, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not value > 0:  # also refuses NaN
                raise ValueError(f"{label} must be > 0 seconds")
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be > 0 seconds, or None")
        if max_event_size < 1024:
            raise ValueError("max_event_size must be at least 1024 bytes")

        self.app_id = app_id
        self.name = name
        self.base_url = url.rstrip("/")
        self.workspace = ws
        self.max_retries = max_retries
        self.deadline = deadline
        self.max_event_size = max_event_size
        self._url = f"{self.base_url}/apps/{app_id}/completion"
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "User-Agent": f"tyqw/{_version()} python/{sys.version_info[0]}.{sys.version_info[1]}",
        }
        if ws is not None:
            headers["X-DashScope-WorkSpace"] = ws
        self._sse_headers = {**headers, "Accept": "text/event-stream", "X-DashScope-SSE": "enable"}
        self._json_headers = {**headers, "Accept": "application/json"}

        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._store = ConversationStore(self.state_dir, app_id, name)
        self._session_id = self._store.load()
        self._generation = 0

        self._emitter = _Emitter()
        self._http = http_session
        self._owns_http = http_session is None
        self._lock: asyncio.Lock | None = None
        self._active: _Turn | None = None
        self._closed = False

    # -- conversation ------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The id of the conversation, or ``None`` before the first turn.

        Assigning stores the new id on disk before the assignment returns; assigning
        ``None`` is ``clear()``.

        Example::

            session.session_id = "5b1f8d2a..."   # continue a conversation from elsewhere
        """
        return self._session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        if value is None:
            self.clear()
            return
        if not isinstance(value, str) or not value.strip():
            raise ValueError("session_id must be a non-empty string, or None")
        self._generation += 1
        self._session_id = value
        self._store.save(value)

    @property
    def store_path(self) -> Path:
        """The file that holds this conversation's id."""
        return self._store.path

    def clear(self) -> None:
        """Forget the conversation: the next turn starts a new one.

        Example::

            session.clear()
            await session.send("你好")       # a fresh conversation, a new session_id
        """
        self._generation += 1
        self._session_id = None
        self._store.delete()

    # -- events ------------------------------------------------------------------

    def on(self, event: Event, handler: Handler) -> Handler:
        """Call ``handler`` for every ``"message"`` (a ``Message``) or ``"error"``
        (a ``TyqwError``). Coroutine functions are awaited, in order.

        Example::

            session.on("message", lambda m: print(m.delta, end=""))
            session.on("error", lambda e: print("error:", e))
        """
        self._emitter.on(_check_event(event), handler)
        return handler

    def once(self, event: Event, handler: Handler) -> Handler:
        """Like ``on()``, for the next event only.

        Example::

            session.once("message", lambda m: print("first piece:", m.delta))
        """
        self._emitter.once(_check_event(event), handler)
        return handler

    def off(self, event: Event, handler: Callable[..., Any]) -> None:
        """Stop calling ``handler`` for ``event``.

        Example::

            session.off("message", printer)
        """
        self._emitter.remove_listener(_check_event(event), handler)

    def listeners(self, event: Event) -> list[Callable[..., Any]]:
        """The handlers subscribed to ``event``."""
        return self._emitter.listeners(_check_event(event))

    # -- turns -------------------------------------------------------------------

    async def send(self, prompt: str, **options: Unpack[Options]) -> Reply:
        """Run one turn: stream the reply, emit each ``message``, return the ``Reply``.

        Handlers run in stream order; those of one message finish before those of the
        next start, and all have finished when ``send()`` returns. An error is emitted
        as ``"error"``; with no ``error`` handler, ``send()`` raises it instead.

        Example::

            reply = await session.send("你好", has_thoughts=True)
            print(reply.text, reply.session_id)
        """
        turn = self._turn(prompt, options)
        emitter = self._emitter
        items = turn.run(raise_recoverable=False)
        next_item = items.__anext__
        try:
            while True:
                try:
                    item = await next_item()
                except StopAsyncIteration:
                    return turn.reply(None)
                except TyqwError as exc:
                    await self._emit_error(exc)
                    return turn.reply(exc)
                if item.__class__ is not Message:
                    # A malformed event: reported, skipped, and the turn goes on.
                    assert isinstance(item, TyqwError)
                    item.reply = turn.reply(item)
                    await self._emit_error(item)
                    continue
                for handler in emitter.message_handlers:
                    try:
                        result = handler(item)
                        if result is not None and isawaitable(result):
                            await result
                    except Exception as exc:
                        error = HandlerError(f"a message handler raised {exc!r}")
                        error.__cause__ = exc
                        error.reply = turn.reply(error)
                        await self._emit_error(error)
        finally:
            await items.aclose()

    def stream(self, prompt: str, **options: Unpack[Options]) -> MessageStream:
        """Run one turn as an async iterator of ``Message``; errors are raised, not emitted.

        Breaking out of the loop closes the HTTP response at once.

        Example::

            async for message in session.stream("讲个笑话"):
                print(message.delta, end="", flush=True)
        """
        return MessageStream(self._turn(prompt, options))

    def abort(self) -> None:
        """End the turn in flight, from anywhere: a handler, another task, a stop button.

        The response is closed at once; ``send()`` returns the partial ``Reply`` without
        an error and ``stream()`` simply stops. Does nothing when no turn runs.

        Example::

            session.on("message", lambda m: session.abort() if "再见" in m.text else None)
        """
        if self._active is not None:
            self._active.interrupt("abort")

    async def aclose(self) -> None:
        """Abort the turn in flight and close the HTTP session tyqw created. Idempotent.

        Example::

            session = Session("YOUR_APP_ID")
            try:
                await session.send("你好")
            finally:
                await session.aclose()
        """
        if self._closed:
            return
        self._closed = True
        self.abort()
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<tyqw.Session app_id={self.app_id!r} name={self.name!r} "
            f"session_id={self._session_id!r} base_url={self.base_url!r} {state}>"
        )

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("this Session is closed; create a new one")

    def _turn(self, prompt: str, options: Options) -> _Turn:
        self._check_open()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return _Turn(self, prompt, dict(options))

    async def _emit_error(self, error: TyqwError) -> None:
        """Await each ``error`` handler in order; with none, raise ``error``."""
        handlers = self._emitter.error_handlers
        if not handlers:
            raise error
        for handler in handlers:
            result = handler(error)
            if result is not None and isawaitable(result):
                await result

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    def _remember(self, session_id: str, generation: int) -> None:
        if generation == self._generation and session_id != self._session_id:
            self._session_id = session_id
            self._store.save(session_id)


class MessageStream:
    """The async iterator ``Session.stream()`` returns; also an async context manager.

    ``reply`` is the ``Reply`` so far (complete once the loop ends).

    Example::

        async with session.stream("你好") as stream:
            async for message in stream:
                print(message.delta, end="")
        print(stream.reply.usage)
    """

    __slots__ = ("_iterator", "_turn")

    def __init__(self, turn: _Turn) -> None:
        self._turn = turn
        self._iterator = turn.run(raise_recoverable=True)

    def __aiter__(self) -> MessageStream:
        return self

    def __anext__(self) -> Any:
        # The generator's own awaitable, not a coroutine wrapping it: one less frame
        # per message on the hot path.
        return self._iterator.__anext__()

    @property
    def reply(self) -> Reply:
        """What the turn has produced so far."""
        return self._turn.reply(None)

    async def aclose(self) -> None:
        """Stop the turn and release the HTTP response."""
        await self._iterator.aclose()

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A loop that breaks out drops the last reference here: close the response now
        # rather than when the event loop gets round to finalizing the generator.
        self._turn.release()


class _Turn:
    """The state of one request/response exchange."""

    def __init__(self, session: Session, prompt: str, options: dict[str, Any]) -> None:
        self.session = session
        self.stream_mode = bool(options.pop("stream", True))
        self.body, self.incremental = _build_body(prompt, options)
        self.text = _Text()
        self.cumulative = ""
        self.session_id: str | None = None
        self.request_id: str | None = None
        self.header_request_id: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.thoughts: list[dict[str, Any]] | None = None
        self.doc_references: list[dict[str, Any]] | None = None
        self.response: aiohttp.ClientResponse | None = None
        self.interrupted: Literal["abort", "deadline"] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.waiting = False
        self.cancelled = False

    # -- the one code path -------------------------------------------------------

    async def run(self, *, raise_recoverable: bool) -> AsyncGenerator[Message | TyqwError, None]:
        session = self.session
        session._check_open()
        if session._lock is None:
            session._lock = asyncio.Lock()
        lock = session._lock
        task = asyncio.current_task()
        active = session._active
        if active is not None and active.task is task:
            raise RuntimeError(
                "send()/stream() called while this task is running a turn of the same "
                "Session (from a handler, a stream loop, or a stream left early without "
                "closing it); it would wait for itself. Close an unfinished stream with "
                "'async with session.stream(...)' or 'await stream.aclose()'"
            )
        await lock.acquire()
        self.task = task
        session._active = self
        generation = session._generation
        # Read the id only now that earlier turns are done: turn two carries the id
        # that turn one returned.
        self.session_id = session._session_id
        if self.session_id is not None:
            self.body["input"].setdefault("session_id", self.session_id)
        deadline = None
        if session.deadline is not None:
            deadline = asyncio.get_running_loop().call_later(
                session.deadline, self.interrupt, "deadline"
            )
        try:
            try:
                session._check_open()
                response = await self._open()
                if response is None:
                    pass  # aborted before an answer arrived
                elif self.stream_mode and "text/event-stream" in response.headers.get(
                    "Content-Type", ""
                ):
                    # The hot path: kept in this one generator, because every level of
                    # async generator costs each message another resumption.
                    # Older gateways send no blank line after a frame: implicit
                    # dispatch ends each frame on its own lines, wherever reads end.
                    decoder = SSEDecoder(max_size=session.max_event_size, implicit_dispatch=True)
                    read = response.content.readany
                    decode_json = _JSON_DECODER.raw_decode
                    while True:
                        chunk = await read()
                        if chunk:
                            events = decoder.feed(chunk)
                        else:
                            events = decoder.close(dispatch_incomplete=True)
                        for sse in events:
                            if self.interrupted:
                                break
                            event = sse.event
                            if event == "result":
                                data = sse.data
                                try:
                                    # raw_decode is json.loads without its wrapping, which
                                    # costs a third as much again as the parse; anything it
                                    # does not read whole (whitespace around the object,
                                    # extra data) takes the slow path below.
                                    obj, end = decode_json(data)
                                    output = obj["output"] if end == len(data) else None
                                except (ValueError, TypeError, KeyError):
                                    output = None
                                if output.__class__ is dict:
                                    yield self._message(obj, output, generation)
                                    continue
                            elif event == "error":
                                raise self._stream_error(sse)
                            for item in self._irregular(sse, generation):
                                if raise_recoverable and item.__class__ is not Message:
                                    raise item  # type: ignore[misc]
                                yield item
                        if not chunk or self.interrupted:
                            break
                else:
                    yield await self._single(response, generation)
                if not self.interrupted and self.finish_reason is None:
                    raise IncompleteStreamError(
                        "the reply ended before it finished (no finish_reason 'stop'); "
                        f"{self.text.length} characters received"
                    )
            except asyncio.CancelledError:
                # Our own cancellation (abort() or the deadline ended a wait) is undone;
                # a caller's cancel(), even one arriving at the same moment, goes on.
                if not self.cancelled or self._uncancel():
                    raise
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # After the event with a finish_reason the reply is whole: a connection
                # that then breaks or goes quiet is closed, and that is all.
                if not self.interrupted and self.finish_reason is None:
                    raise self._wrap(exc) from exc
            if self.interrupted == "deadline" and self.finish_reason is None:
                raise APITimeoutError(
                    f"the turn took longer than its deadline of {session.deadline:g}s"
                )
        except TyqwError as exc:
            if exc.reply is None:
                exc.reply = self.reply(exc)
            raise
        finally:
            if deadline is not None:
                deadline.cancel()
            self.release()
            if session._active is self:
                session._active = None
            self.task = None
            lock.release()
            if self.session_id is not None and generation == session._generation:
                session._store.touch()

    async def _single(self, response: aiohttp.ClientResponse, generation: int) -> Message:
        """A reply that is not an event stream: JSON (``stream=False``, or a relay that
        dropped ``X-DashScope-SSE``) or something tyqw cannot read."""
        content_type = response.headers.get("Content-Type", "")
        if "json" in content_type:
            return self._json_reply(await self._read_json(response), generation)
        body = await _read_body(response, 1024)
        expected = "text/event-stream" if self.stream_mode else "application/json"
        raise UnexpectedContentTypeError(
            f"expected {expected}, got {content_type or 'no content type'} "
            f"with HTTP {response.status}: {excerpt(body)}",
            status_code=response.status,
            content_type=content_type,
            excerpt=excerpt(body),
        )

    async def _open(self) -> aiohttp.ClientResponse | None:
        """Send the request, retrying before any event arrived; ``None`` if aborted."""
        session = self.session
        http = session._client()
        headers = session._sse_headers if self.stream_mode else session._json_headers
        data = json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "POST %s headers=%s body=%s", session._url, _redacted(headers), data[:2000]
            )
        attempt = 0
        while True:
            if self.interrupted:
                return None
            delay: float | None = None
            reason = ""
            self.waiting = True
            try:
                response = await http.post(
                    session._url,
                    data=data,
                    headers=headers,
                    timeout=session._timeout,
                    # Never re-send the prompt (and key) to wherever a redirect points.
                    allow_redirects=False,
                )
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                if not _retryable_connection_error(exc) or attempt >= session.max_retries:
                    raise
                reason = f"connection failed: {exc.__class__.__name__}"
                response = None
            finally:
                self.waiting = False
            if response is not None:
                self.response = response
                if response.status < 400:
                    self.header_request_id = response.headers.get("x-request-id")
                    return response
                error = await self._status_error(response)
                self.release()
                if self.interrupted:
                    # abort() or the deadline closed the response while its error body
                    # was being read: the turn is over, neither an error nor a retry.
                    return None
                if response.status not in _RETRY_STATUSES or attempt >= session.max_retries:
                    raise error
                reason = str(error)
                delay = _retry_after(response.headers)
            if delay is None:
                delay = _backoff(attempt)
            attempt += 1
            logger.info(
                "tyqw: retrying %s in %.2fs (retry %d of %d): %s",
                session._url,
                delay,
                attempt,
                session.max_retries,
                reason,
            )
            self.waiting = True
            try:
                await asyncio.sleep(delay)
            finally:
                self.waiting = False

    def _irregular(self, sse: ServerSentEvent, generation: int) -> list[Message | TyqwError]:
        """The slow path: events that are not one well-formed ``result`` object."""
        if sse.event not in ("result", "message"):
            logger.debug("tyqw: ignoring SSE event of type %r", sse.event)
            return []
        items: list[Message | TyqwError] = []
        # Older gateways omit the blank line between frames, so one block can hold
        # several complete JSON objects, one per data line.
        lines = sse.data.split("\n")
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            output = obj.get("output") if isinstance(obj, dict) else None
            if isinstance(output, dict):
                items.append(self._message(obj, output, generation))
            elif isinstance(obj, dict) and "code" in obj and "message" in obj:
                # An error object sent as a result event by a gateway: fatal, like event:error.
                raise self._stream_error(
                    ServerSentEvent(event="error", data=line, id=sse.id, comment=sse.comment)
                )
            else:
                what = "is not JSON" if obj is None else "has no 'output' object"
                items.append(
                    StreamError(
                        f"malformed event (id {sse.id or '?'}): its data {what}: {excerpt(line)}",
                        excerpt=excerpt(line),
                    )
                )
        return items

    def _message(self, obj: dict[str, Any], output: dict[str, Any], generation: int) -> Message:
        # Runs once per event: plain local work, no more lookups than needed.
        get = output.get
        wire_text = get("text") or ""
        text = self.text
        if self.incremental:
            delta = wire_text
        else:
            previous = self.cumulative
            if wire_text.startswith(previous):
                delta = wire_text[len(previous) :]
            elif not wire_text:
                delta = ""
            else:
                # The text was rewritten rather than extended: start over from it.
                text = self.text = _Text()
                delta = wire_text
            if delta:
                self.cumulative = wire_text
        if delta:
            text.append(delta)
        finish = get("finish_reason")
        if finish == "null":
            finish = None
        elif finish is not None:
            self.finish_reason = finish
        session_id = get("session_id") or None
        if session_id != self.session_id and session_id is not None:
            self.session_id = session_id
            self.session._remember(session_id, generation)
        request_id = self.request_id = obj.get("request_id") or self.header_request_id
        usage = obj.get("usage")
        if usage:
            self.usage = usage
        thoughts = get("thoughts")
        if thoughts:
            self.thoughts = thoughts
        doc_references = get("doc_references")
        if doc_references:
            self.doc_references = doc_references
        return new_message(
            delta,
            session_id,
            request_id,
            finish,
            thoughts,
            doc_references,
            usage,
            get("workflow_message"),
            obj,
            text,
        )

    def _json_reply(self, obj: Any, generation: int) -> Message:
        output = obj.get("output") if isinstance(obj, dict) else None
        if not isinstance(output, dict):
            shown = excerpt(json.dumps(obj))
            raise StreamError(f"the JSON answer has no 'output' object: {shown}", excerpt=shown)
        self.incremental = True  # one answer holds the whole text
        message = self._message(obj, output, generation)
        if self.finish_reason is None:
            self.finish_reason = "stop"
        return message

    async def _read_json(self, response: aiohttp.ClientResponse) -> Any:
        # A non-streaming answer is one event: the same cap applies.
        limit = self.session.max_event_size
        body = await _read_body(response, limit + 1)
        if len(body) > limit:
            raise EventTooLargeError(f"JSON answer larger than {limit} bytes", limit=limit)
        try:
            return json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            raise StreamError(
                f"the answer is not valid JSON: {excerpt(body)}", excerpt=excerpt(body)
            ) from None

    def _stream_error(self, sse: ServerSentEvent) -> APIStatusError:
        """An ``event:error`` frame: the status is in its ``:HTTP_STATUS/<n>`` comment."""
        try:
            obj = json.loads(sse.data)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            obj = {"message": f"malformed error event: {excerpt(sse.data)}"}
        match = _HTTP_STATUS.search(sse.comment or "")
        status = int(match.group(1)) if match else 500
        return _api_error(status, obj, self.header_request_id)

    async def _status_error(self, response: aiohttp.ClientResponse) -> APIStatusError:
        try:
            body = await _read_body(response, _ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            body = b""
        request_id = response.headers.get("x-request-id")
        text = body.decode("utf-8", "replace")
        obj: Any = None
        try:
            obj = json.loads(text)
        except ValueError:
            # Some gateways frame the error body as SSE.
            decoder = SSEDecoder(max_size=_ERROR_BODY_LIMIT + 1)
            for sse in decoder.feed(body) + decoder.close(dispatch_incomplete=True):
                try:
                    obj = json.loads(sse.data)
                    break
                except ValueError:
                    continue
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            obj = obj["error"]  # an OpenAI-style body from a compatible gateway
        if not isinstance(obj, dict):
            obj = {"message": f"{response.reason or 'error'}: {excerpt(text)}" if text else None}
        return _api_error(response.status, obj, request_id)

    def _wrap(self, exc: BaseException) -> TyqwError:
        phase = "reading the reply" if self.response is not None else "connecting"
        if isinstance(exc, asyncio.TimeoutError):
            if self.response is not None:
                return APITimeoutError(
                    f"no data for {self.session.read_timeout:g}s while reading the reply "
                    "(read_timeout)"
                )
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                return APITimeoutError(
                    f"timed out connecting to {self.session.base_url} "
                    f"(connect_timeout {self.session.connect_timeout:g}s)"
                )
            # Connected and sent, but the answer did not start: the idle limit again.
            return APITimeoutError(
                f"no answer from {self.session.base_url} within "
                f"{self.session.read_timeout:g}s of sending the request (read_timeout)"
            )
        if self.response is not None:
            return IncompleteStreamError(
                f"the connection closed before the reply finished ({exc.__class__.__name__}); "
                f"{self.text.length} characters received"
            )
        return APIConnectionError(f"network error while {phase}: {exc}")

    # -- interruption ------------------------------------------------------------

    def interrupt(self, reason: Literal["abort", "deadline"]) -> None:
        if self.interrupted or self.task is None:
            return
        self.interrupted = reason
        if self.response is not None:
            self.response.close()
        if self.waiting:
            # Connecting or backing off: nothing to close yet, so cancel the wait.
            self.cancelled = True
            self.task.cancel()

    def _uncancel(self) -> bool:
        """Withdraw interrupt()'s cancel(); True if someone else cancelled the task too.

        Python 3.10 has no cancellation count, so there a simultaneous cancel() is lost.
        """
        task = asyncio.current_task()
        if task is None or not hasattr(task, "uncancel"):
            return False
        return bool(task.uncancel())

    def release(self) -> None:
        """Give the connection back (or close it, if the body was not read to its end)."""
        response = self.response
        if response is not None:
            self.response = None
            if response.content.is_eof():
                response.release()
            else:
                response.close()

    def reply(self, error: TyqwError | None) -> Reply:
        return Reply(
            text=self.text.upto(self.text.length),
            session_id=self.session_id,
            request_id=self.request_id or self.header_request_id,
            finish_reason=self.finish_reason,
            usage=self.usage,
            thoughts=self.thoughts,
            doc_references=self.doc_references,
            error=error,
        )


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to ``limit`` bytes; what lies past the limit is never buffered."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _build_body(prompt: str, options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    input_: dict[str, Any] = {"prompt": prompt}
    parameters: dict[str, Any] = {"incremental_output": True}
    extra_input = options.pop("input", None) or {}
    extra_parameters = options.pop("parameters", None) or {}
    for key, value in options.items():
        if key in _INPUT_KEYS:
            input_[key] = value
        elif key in _PARAMETER_KEYS:
            parameters[key] = value
        else:
            raise TypeError(
                f"unknown option {key!r}; pass keys tyqw does not know as "
                "input={...} or parameters={...}"
            )
    input_.update(extra_input)
    parameters.update(extra_parameters)
    return {"input": input_, "parameters": parameters}, parameters.get(
        "incremental_output"
    ) is not False


def _api_error(status: int, obj: dict[str, Any], request_id: str | None) -> APIStatusError:
    code = obj.get("code")
    message = obj.get("message")
    return status_error(
        status,
        str(message) if message else f"HTTP {status}",
        code=str(code) if code else None,
        request_id=str(obj.get("request_id") or request_id or "") or None,
    )


def _retryable_connection_error(exc: BaseException) -> bool:
    # A timeout after the request was sent may mean the service is already working
    # on it: retrying would pay twice. A certificate or TLS failure will fail the same
    # way again. Connect timeouts and refused or dropped connections are safe.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(
        exc, (aiohttp.SocketTimeoutError, aiohttp.ClientSSLError)
    )


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    # The exponent is clamped: a float overflows near 2**1024, and the cap wins long before.
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(attempt, 32)))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    try:
        ms = float(value) if value is not None else math.nan
    except ValueError:
        ms = math.nan
    if not math.isnan(ms):
        return min(max(ms / 1000, 0.0), _RETRY_AFTER_CAP)
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            # RFC 5322 "-0000": UTC, with no claim about local time.
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


def _check_base_url(url: str, allow_insecure_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ValueError(
            f"refusing to send the API key over plain http to {parts.hostname}; use https, "
            "or pass allow_insecure_http=True if you really mean it"
        )
    if "?" in url or "#" in url:
        # {base_url}/apps/{app_id}/completion is appended: it would land in the query.
        raise ValueError(f"base_url must not have a query or fragment, got {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers.items()}


def _check_event(event: str) -> str:
    if event not in _EVENTS:
        raise ValueError(f"unknown event {event!r}; tyqw emits 'message' and 'error'")
    return event


def _version() -> str:
    from . import __version__

    return __version__
