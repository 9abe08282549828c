"""One turn: the turn slot of its Session and the one generator that sends the request,
hands the response's bytes to ``ReplyReader.feed`` (``tyqw._protocol``, which alone turns
them into ``Message`` objects) and yields what it gets.

The slot runs a Session's turns one at a time, refuses a turn started from inside a
turn of the same Session (it would wait for itself), and lets ``abort()``, the deadline
and a send bound end the turn from outside. ``Turn.run()`` is the only code that reads
a reply: ``Session.stream()`` hands it to the caller, ``Session.send()`` emits what it
yields. Kept in one module because the interruption state is shared by every await of
the turn.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import enum
import functools
import io
import logging
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol, cast, overload

import aiohttp

from ._config import Config
from ._context import history_messages
from ._exceptions import (
    APITimeoutError,
    IncompleteStreamError,
    SessionClosedError,
    StoreError,
    StreamError,
    TyqwError,
    UnexpectedContentTypeError,
    excerpt,
)
from ._history import Exchange, ended_now
from ._http import read_body, redacted, scrub, unquote_secrets, wrap
from ._loop_thread import on_loop
from ._models import Message, Reply, TokenUsage, ToolCall
from ._options import TurnOptions
from ._protocol import ReplyReader, error_from_body
from ._retry import RETRY_STATUSES, backoff, retry_after, retryable_connection_error
from ._telemetry import TurnObserver, active
from ._tools import Toolbox
from ._wire import dumps

__all__ = ["Slot", "Turn", "TurnLedger", "TurnState", "refuse_inside_turn"]

logger = logging.getLogger("tyqw")

# Bytes read after the final event, to find the end of the response and reuse the
# connection; past this the connection is closed instead.
_DRAIN_SECONDS = 0.01
_ERROR_BODY_LIMIT = 64 * 1024
_LARGE_BODY = 512 * 1024

Interruption = Literal["abort", "deadline", "lost", "send"]

# The turns running in this context. A task started inside a handler copies the
# context, so it sees its parent's turn and is refused instead of waiting for it.
# Weak references: every timer and task made during a turn keeps a copy of the context,
# some long after the turn (asyncio drops cancelled timers in batches), and a strong one
# would keep each finished turn, its reply and its request alive with them.
_ACTIVE: contextvars.ContextVar[tuple[weakref.ref[Turn], ...]] = contextvars.ContextVar(
    "tyqw_active_turns", default=()
)


class TurnLedger(Protocol):
    """What a turn needs of its Session's ledger (``_ledger.Ledger``)."""

    async def begin(
        self, on_lost: Callable[[StoreError], object]
    ) -> tuple[object, str | None, list[dict[str, str]] | None]:
        """Take the conversation (its store's lock); return a ticket, the id to send and,
        when the service has forgotten the conversation, the context to send instead.
        ``on_lost`` is called if the store can no longer prove the lock is held."""

    def seen(self, ticket: object, session_id: str) -> None:
        """The service sent this conversation id."""

    async def context(self) -> list[Exchange]:
        """The transcript, for a model's turn to send again (the turn holds the lock)."""

    def end(
        self,
        ticket: object,
        session_id: str | None,
        usage: dict[str, TokenUsage],
        exchange: Callable[[], Exchange],
    ) -> Coroutine[Any, Any, None] | None:
        """Record the turn's outcome (``exchange()`` builds it for the transcript) and
        give the conversation back; a coroutine when that needs I/O."""


class Slot:
    """A Session's turn slot: one turn at a time, and the turn in flight."""

    __slots__ = ("_lock", "active", "closed")

    def __init__(self) -> None:
        self.closed = False
        self.active: Turn | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("this Session is closed; create a new one")


class TurnState(enum.Enum):
    """Where a turn is in its life; it only moves forward, as listed."""

    NEW = "new"  # made, not started
    QUEUED = "queued"  # waiting for its Session's slot
    HOLDING = "holding"  # holds the slot (and the conversation): nothing sent yet
    SENT = "sent"  # the request went out: the turn ran, whatever comes back
    DONE = "done"  # finish() ran: the slot and the conversation are given back


class Turn:
    """The state of one request and its reply: a ``TurnState``, and the interruption
    that ends it early (``interrupted``, with ``waiting`` telling whether that has a
    wait to cancel). ``run()`` reads as its steps: ``_acquire`` (slot, conversation),
    ``_open`` (transport and retry), ``ReplyReader.feed`` (bytes to messages),
    ``_run_tools``, ``finish``.
    """

    def __init__(
        self,
        config: Config,
        client: Callable[[], aiohttp.ClientSession],
        slot: Slot,
        conversation: TurnLedger,
        options: TurnOptions,
    ) -> None:
        self.config = config
        self.client = client
        self.slot = slot
        self.conversation = conversation
        self.options = options
        # The reader tells the conversation of a new id once the turn holds it (see
        # _acquire); a callback into the Turn itself would make a reference cycle.
        self.reader = ReplyReader(
            incremental=options.incremental,
            on_session_id=_ignore,
            model=config.model,
            max_event_size=config.max_event_size,
        )
        self.response: aiohttp.ClientResponse | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.interrupted: Interruption | None = None
        self.waiting = False  # in an await that interrupt() may cancel
        self.cancelled: Interruption | None = None  # why interrupt() cancelled the task
        self.state = TurnState.NEW
        self.ticket: object = None
        self.timer: asyncio.TimerHandle | None = None
        self.started_at: dt.datetime | None = None
        self.error: TyqwError | None = None  # what ended the turn, for its exchange
        self.read: Reply | None = None  # the final reply its exchange kept (read_reply)
        # OpenTelemetry's view of the turn; None (every hook a None test) when it is off.
        self.observer: TurnObserver | None = None
        self.lost: StoreError | None = None  # why the store's lock was lost mid-turn

    # -- the one code path -------------------------------------------------------------

    @overload
    def run(
        self, *, yield_malformed: Literal[False]
    ) -> AsyncGenerator[Message, None]: ...  # what Session.stream() hands out
    @overload
    def run(
        self, *, yield_malformed: Literal[True], yield_tools: bool = False
    ) -> AsyncGenerator[Message | StreamError | ToolCall, None]: ...
    async def run(
        self, *, yield_malformed: bool, yield_tools: bool = False
    ) -> AsyncGenerator[Message | StreamError | ToolCall, None]:
        """Send the request and yield the reply's messages. A malformed event is
        yielded as a ``StreamError`` when ``yield_malformed``, else raised. A model's
        tool calls are run between rounds of the same turn, each yielded as a
        ``ToolCall`` (with its result) when ``yield_tools``."""
        self._enter()
        reader = self.reader
        observer = self.observer = self._observe()
        observe = None if observer is None else observer.message
        tools = self.options.tools
        rounds = 0
        try:
            try:
                await self._acquire()
                while True:
                    start = reader.text.length
                    response = await self._open()
                    if response is None:
                        pass  # aborted before an answer arrived
                    elif _media_type(response) == "text/event-stream":
                        # The hot path: one level of generator between the socket and the
                        # caller (each level costs every message another resumption).
                        reader.open_stream()
                        read = response.content.readany
                        feed = reader.feed
                        while True:
                            chunk = await read()
                            if self.interrupted:
                                break
                            for item in feed(chunk):
                                if item.__class__ is not Message and not yield_malformed:
                                    raise cast(StreamError, item)
                                if observe is not None:
                                    observe(item)
                                yield item
                                if self.interrupted:
                                    break  # decode no further
                            if not chunk or self.interrupted or reader.finish_reason is not None:
                                break
                        if reader.finish_reason is not None and not self.interrupted:
                            await self._drain(response)
                    else:
                        single = await self._single(response)
                        if observe is not None:
                            observe(single)
                        yield single
                    if (
                        tools is None
                        or not reader.tool_calls
                        or self.interrupted
                        or rounds >= tools.max_rounds  # the calls are left unanswered
                    ):
                        break
                    # The model asked for tools: run them, and the same turn goes on.
                    rounds += 1
                    text = reader.text.upto(reader.text.length)[start:]
                    done = await self._run_tools(tools, reader.next_round())
                    for call in done:
                        if yield_tools:
                            yield call
                    if self.interrupted:
                        break
                    self.options.add_round(text, done, last=rounds >= tools.max_rounds)
                    self.release()
                if not self.interrupted and reader.finish_reason is None:
                    raise IncompleteStreamError(
                        "the reply ended before its final event (no finish_reason 'stop'); "
                        f"{reader.text.length} characters received"
                    )
            except asyncio.CancelledError:
                # Our own cancellation (abort(), the deadline or the send bound ended a
                # wait) is undone; a caller's cancel(), even one at the same moment, goes on.
                if self.cancelled is None or self._uncancel():
                    raise
                if self.cancelled == "send":
                    raise APITimeoutError(
                        f"no answer from {self.config.base_url} within "
                        f"{self._send_bound():g}s of starting to send the request "
                        "(connect_timeout + read_timeout)"
                    ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # After the final event the reply is whole: a connection that then breaks
                # or goes quiet is closed, and that is all.
                if not self.interrupted and reader.finish_reason is None:
                    raise wrap(
                        exc,
                        answered=self.response is not None,
                        received=reader.text.length,
                        what=self._timeout_message(exc),
                    ) from exc
            except TyqwError:
                raise
            except Exception as exc:
                # Whatever the bytes, the caller gets messages and TyqwErrors only.
                logger.debug("tyqw: unexpected failure reading the reply", exc_info=True)
                raise StreamError(
                    f"could not read the reply: {exc.__class__.__name__}: {excerpt(str(exc))}"
                ) from scrub(exc)
            if self.interrupted == "deadline" and reader.finish_reason is None:
                raise APITimeoutError(
                    f"the turn took longer than its deadline of {self._deadline():g}s"
                )
            if self.lost is not None and reader.finish_reason is None:
                # Stopped while the lock was still ours: no other turn overlapped this one.
                raise StoreError(
                    f"{self.lost}; the turn was stopped, its reply is partial "
                    f"({reader.text.length} characters received)"
                ) from self.lost
        except TyqwError as exc:
            unquote_secrets(exc, self.config.headers(True, {}))
            if exc.reply is None:
                exc.reply = reader.reply(exc)
            self.error = exc
            if observer is not None:
                observer.failed(exc)
            raise
        except asyncio.CancelledError as exc:
            # The caller's cancellation (ours became a result or a TyqwError above).
            if observer is not None:
                observer.failed(exc)
            raise
        finally:
            sent = self.state is TurnState.SENT
            pending = self.finish()
            if pending is not None:
                try:
                    await pending
                except TyqwError as exc:
                    if self.error is not None:
                        # The turn's own error says what went wrong first; the store's
                        # failure to record it would hide that.
                        logger.warning(
                            "tyqw: the turn failed, and its conversation could not be "
                            "recorded either: %s",
                            exc,
                        )
                    elif not sent:  # aborted before its request went out
                        if exc.reply is None:
                            exc.reply = reader.reply(exc)
                        raise
                    else:
                        raise self._unrecorded(exc) from exc

    def _unrecorded(self, exc: TyqwError) -> StoreError:
        """The error of a turn that ran but whose conversation could not be recorded: it
        says so and carries the reply, whatever happens to the Session afterwards."""
        error = StoreError(
            f"the turn ran (its reply arrived: {self.reader.text.length} characters) but "
            f"the conversation could not be recorded: {exc}"
        )
        error.reply = self.reader.reply(error)
        return error

    async def _run_tools(self, tools: Toolbox, calls: list[ToolCall]) -> list[ToolCall]:
        """Run one round's calls; abort() and the deadline end the wait."""
        self.waiting = True
        try:
            done = await tools.run(calls)
        finally:
            self.waiting = False
        self.reader.calls.extend(done)
        return done

    def _observe(self) -> TurnObserver | None:
        """The turn's telemetry: an ``invoke_agent`` span named after the app (a ``chat``
        span named after the model, for a model's turn); ``None`` (at the cost of a dict
        lookup) while nobody configured OpenTelemetry."""
        instruments = active()
        if instruments is None:
            return None
        if self.config.model is not None:
            body_model = self.options.body.get("model")
            name = body_model if isinstance(body_model, str) else self.config.model
            return TurnObserver(
                instruments,
                "chat",
                name=name,
                base_url=self.config.base_url,
                agent_id=None,
                request_model=name,
                data_source_id=None,
                prompt=None if self.options.forwarded else self.options.prompt,
                stream=self.options.stream,
                conversation_id=None,
            )
        parameters = self.options.body["parameters"]
        model = parameters.get("model_id")
        rag = parameters.get("rag_options")
        pipelines = rag.get("pipeline_ids") if isinstance(rag, dict) else None
        source = pipelines[0] if isinstance(pipelines, list) and pipelines else None
        prompt = self.options.body["input"].get("prompt")
        return TurnObserver(
            instruments,
            "invoke_agent",
            name=self.config.app_id or "",
            base_url=self.config.base_url,
            agent_id=self.config.app_id,
            request_model=model if isinstance(model, str) else None,
            data_source_id=source if isinstance(source, str) else None,
            prompt=prompt if isinstance(prompt, str) else None,
            stream=self.options.stream,
            conversation_id=None,  # known at the end (a new conversation gets it then)
        )

    def _advance(self, state: TurnState) -> bool:
        """Move to ``state``; False (and no move) once the turn is done."""
        if self.state is TurnState.DONE:
            return False
        self.state = state
        return True

    def _enter(self) -> None:
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.slot.check_open()
        refuse_inside_turn(self.slot, "send()/stream()")
        running = [ref for ref in _ACTIVE.get() if _running(ref)]
        _ACTIVE.set((*running, weakref.ref(self)))

    async def _acquire(self) -> None:
        """Take the slot and the conversation, within the deadline."""
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        deadline = self._deadline()
        if deadline is not None:
            self.timer = self.loop.call_later(deadline, self.interrupt, "deadline")
        self.waiting = True
        try:
            self._advance(TurnState.QUEUED)
            await self.slot.lock.acquire()
            if not self._advance(TurnState.HOLDING):
                # finish() ran while the slot was awaited (a stream dropped mid-wait):
                # it took nothing back, so the lock is given back here.
                self.slot.lock.release()
            self.slot.check_open()
            self.slot.active = self
            context = None
            if self.options.forwarded:
                return  # a relayed body, history and all: no conversation of ours
            if self.options.session_id is None:
                self.ticket, session_id, context = await self.conversation.begin(self._lose)
                self.reader.on_session_id = functools.partial(self.conversation.seen, self.ticket)
            else:
                session_id = self.options.session_id  # this turn only: the store stays out
            if self.config.model is not None:
                # A model keeps no conversation: tyqw names it, and sends its history.
                self.reader.session_id = session_id or uuid.uuid4().hex
                held = self.ticket is not None and session_id is not None
                exchanges = await self.conversation.context() if held else []
                self.options.messages(history_messages(exchanges, self.options.budget))
                return
            body_input = self.options.body["input"]
            if context and "messages" not in body_input:
                body_input["messages"] = context  # the caller's own messages= win
            if session_id is not None:
                body_input.setdefault("session_id", session_id)
                self.reader.session_id = session_id
        finally:
            self.waiting = False

    def _deadline(self) -> float | None:
        deadline = self.options.deadline
        return self.config.deadline if deadline is False else deadline

    def _send_bound(self) -> float:
        return self.config.connect_timeout + (
            self.options.read_timeout or self.config.read_timeout
        )

    def _timeout_message(self, exc: BaseException) -> str:
        read_timeout = self.options.read_timeout or self.config.read_timeout
        if self.response is not None:
            return f"no data for {read_timeout:g}s while reading the reply (read_timeout)"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return (
                f"timed out connecting to {self.config.base_url} "
                f"(connect_timeout {self.config.connect_timeout:g}s)"
            )
        return (
            f"no answer from {self.config.base_url} within {read_timeout:g}s of sending "
            "the request (read_timeout)"
        )

    async def _single(self, response: aiohttp.ClientResponse) -> Message:
        """A reply that is not an event stream: JSON (``stream=False``, or a relay that
        dropped ``X-DashScope-SSE``) or something tyqw cannot read."""
        media_type = _media_type(response)
        if media_type == "application/json" or media_type.endswith("+json"):
            body = await read_body(response.content, self.config.max_event_size + 1)
            return self.reader.json_answer(body)
        body = await read_body(response.content, 1024)
        content_type = response.headers.get("Content-Type", "")
        expected = "text/event-stream" if self.options.stream else "application/json"
        raise UnexpectedContentTypeError(
            f"expected {expected}, got {content_type[:100] or 'no content type'} "
            f"with HTTP {response.status}: {excerpt(body)}",
            status_code=response.status,
            content_type=content_type[:200],
            excerpt=excerpt(body),
        )

    async def _open(self) -> aiohttp.ClientResponse | None:
        """Send the request, retrying before any event arrived; ``None`` if interrupted."""
        config, options = self.config, self.options
        http = self.client()
        headers = config.headers(options.stream, options.headers)
        timeout = (
            config.timeout
            if options.read_timeout is None
            else config.client_timeout(options.read_timeout)
        )
        try:
            # The module's one encoder: json.dumps() with these arguments builds one per call.
            data = dumps(options.body).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"an option's value cannot be sent as JSON: {exc}") from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("POST %s headers=%s body=%s", config.url, redacted(headers), data[:2000])
        # aiohttp writes a large bytes body in one go (and warns); from a file-like
        # object it writes in pieces, letting the loop run between them.
        payload: bytes | io.BytesIO = data
        observer = self.observer
        if observer is not None:
            observer.sending()
        attempt = 0
        while True:
            if self.interrupted:
                return None
            assert self.loop is not None
            # aiohttp bounds connecting and reading, not sending the body: this bounds all.
            bound = self.loop.call_later(self._send_bound(), self._cancel_wait, "send")
            self.waiting = True
            if len(data) > _LARGE_BODY:
                payload = io.BytesIO(data)
            self._advance(TurnState.SENT)
            try:
                response = await http.post(
                    config.url,
                    data=payload,
                    headers=headers,
                    timeout=timeout,
                    proxy=config.proxy,
                    # Never re-send the prompt (and key) to wherever a redirect points.
                    allow_redirects=False,
                )
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                if not retryable_connection_error(exc) or attempt >= config.max_retries:
                    raise
                reason = f"connection failed: {exc.__class__.__name__}"
                failure: BaseException = exc
                response = None
            finally:
                self.waiting = False
                bound.cancel()
            delay = None
            if response is not None:
                self.response = response
                if response.status < 400:
                    self.reader.header_request_id = response.headers.get("x-request-id")
                    return response
                self.waiting = True
                try:
                    answer = await read_body(response.content, _ERROR_BODY_LIMIT)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    answer = b""
                finally:
                    self.waiting = False
                error = error_from_body(response.status, response.reason, answer, response.headers)
                unquote_secrets(error, headers)  # before the retry line below logs it
                self.release()
                if self.interrupted:
                    # abort() or the deadline closed the response while its error body
                    # was being read: the turn is over, neither an error nor a retry.
                    return None
                if response.status not in RETRY_STATUSES or attempt >= config.max_retries:
                    raise error
                reason = str(error)
                failure = error
                delay = retry_after(response.headers)
            if delay is None:
                delay = backoff(attempt)
            attempt += 1
            if observer is not None:
                observer.retry(
                    attempt, delay, failure, None if response is None else response.status
                )
            logger.info(
                "tyqw: retrying %s in %.2fs (retry %d of %d): %s",
                config.url,
                delay,
                attempt,
                config.max_retries,
                reason,
            )
            self.waiting = True
            try:
                await asyncio.sleep(delay)
            finally:
                self.waiting = False

    async def _drain(self, response: aiohttp.ClientResponse) -> None:
        """Read what follows the final event for a moment, so that the connection can be
        reused; a server that stays open longer gets its connection closed."""
        content = response.content
        if content.at_eof():
            return
        assert self.loop is not None
        timer = self.loop.call_later(_DRAIN_SECONDS, response.close)
        try:
            while await content.readany():
                pass
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        finally:
            timer.cancel()

    # -- interruption ------------------------------------------------------------------

    def abort(self) -> None:
        """``interrupt("abort")`` from any thread, at once."""
        if self.loop is not None and self.state is not TurnState.DONE:
            on_loop(self.loop, self.interrupt, "abort")

    def _lose(self, error: StoreError) -> None:
        """The store can no longer prove the conversation's lock is ours: stop now."""
        if self.lost is None and self.state is not TurnState.DONE:
            self.lost = error
            if asyncio.current_task() is self.task:
                # Told while taking the conversation: nothing to cancel, nothing is sent.
                self.interrupted = self.interrupted or "lost"
            else:
                self.interrupt("lost")

    def interrupt(self, reason: Literal["abort", "deadline", "lost"]) -> None:
        if self.interrupted or self.state is TurnState.DONE or self.task is None:
            return
        self.interrupted = reason
        if self.response is not None:
            self.response.close()
        self._cancel_wait(reason)

    def _cancel_wait(self, reason: Interruption) -> None:
        if self.waiting and self.task is not None and self.cancelled is None:
            # Waiting for the slot, the store, an answer or a backoff: nothing to close
            # yet, so cancel the wait.
            self.cancelled = reason
            self.task.cancel()

    def _uncancel(self) -> bool:
        """Withdraw our cancel(); True if someone else cancelled the task too.

        Python 3.10 has no cancellation count, so there a simultaneous cancel() is lost.
        """
        task = asyncio.current_task()
        if task is None or not hasattr(task, "uncancel"):
            return False
        return bool(task.uncancel())

    # -- the end -----------------------------------------------------------------------

    def release(self) -> None:
        """Give the connection back (or close it, if the body was not read to its end)."""
        response = self.response
        if response is not None:
            self.response = None
            if response.content.is_eof():
                response.release()
            else:
                response.close()

    def finish(self) -> Coroutine[Any, Any, None] | None:
        """End the turn now: close the response, give the slot back. Idempotent and
        synchronous, so that a stream left early frees the Session at once; returns what
        is left to await when the conversation's store needs I/O."""
        state = self.state
        if state is TurnState.DONE:
            return None
        self.state = TurnState.DONE
        if self.timer is not None:
            self.timer.cancel()
        observer = self.observer
        reader = self.reader
        # Read once for the observer and the conversation: it walks the usage's models.
        usage = reader.token_usage() if observer is not None or self.ticket is not None else {}
        if observer is not None:
            observer.end(
                session_id=reader.session_id,
                request_id=reader.request_id or reader.header_request_id,
                finish_reason=reader.finish_reason,
                usage=usage,
                text=reader.text.upto(reader.text.length) if observer.capture else None,
                doc_references=reader.doc_references,
                interrupted=self.interrupted,
            )
        self.release()
        slot = self.slot
        if slot.active is self:
            slot.active = None
        self.task = None
        pending = None
        if self.ticket is not None:
            pending = self.conversation.end(self.ticket, reader.session_id, usage, self._exchange)
            self.ticket = None
            reader.on_session_id = _ignore
        if state is not TurnState.HOLDING and state is not TurnState.SENT:
            return pending  # the slot's lock was never taken
        if pending is None:
            slot.lock.release()
            return None
        return _then_release(pending, slot.lock)

    def reply(self, error: TyqwError | None) -> Reply:
        return self.reader.reply(error)

    def read_reply(self) -> Reply:
        """The reply of a turn read to its end without an error: the one its exchange
        keeps when it has been built (the reader changes no more once the turn is done)."""
        return self.read or self.reader.reply(None)

    def _exchange(self) -> Exchange:
        """The turn as its conversation's transcript keeps it."""
        assert self.started_at is not None
        error = self.error
        if error is None:
            reply = self.read = self.reader.reply(None)  # read_reply() returns it
        else:
            reply = error.reply or self.reader.reply(error)
        return ended_now(self.options.prompt, reply, self.started_at)


def refuse_inside_turn(slot: Slot, what: str) -> None:
    """``RuntimeError`` if a turn of ``slot``'s Session runs in this task or its parent:
    ``what`` would wait for the conversation that turn holds, that is for itself."""
    for ref in _ACTIVE.get():
        turn = ref()
        if turn is not None and turn.slot is slot and turn.state is not TurnState.DONE:
            raise RuntimeError(
                f"{what} called while a turn of the same Session runs in this "
                "task or its parent (from a handler, a task a handler started, a stream "
                "loop, or a stream left early without closing it); it would wait for "
                "itself. Close an unfinished stream with 'async with session.stream(...)' "
                "or 'await stream.aclose()'"
            )


def _running(ref: weakref.ref[Turn]) -> bool:
    turn = ref()
    return turn is not None and turn.state is not TurnState.DONE


def _ignore(session_id: str) -> None:
    pass


async def _then_release(pending: Awaitable[None], lock: asyncio.Lock) -> None:
    try:
        await pending
    finally:
        lock.release()


def _media_type(response: aiohttp.ClientResponse) -> str:
    """The media type of the answer, lower case (media types are case-insensitive)."""
    return response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
