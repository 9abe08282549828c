"""``Session``: one conversation with a Bailian application or a Qwen model.

One streaming code path: ``Turn.run()`` sends the request, reads the SSE reply and
yields ``Message`` objects. ``Session.stream()`` hands that iterator to the caller as a
``MessageStream``; ``Session.send()`` consumes the same iterator and emits each message,
and the turn-level events derived from it, to the handlers, awaiting them in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ._config import DEFAULT_BASE_URL, Config, setup_logging
from ._context import DEFAULT_HISTORY_CHARS, check_budget
from ._events import Emitter, Event, Subscriptions, TurnEvents, check_event, emit, emit_error
from ._exceptions import TyqwError
from ._history import Exchange
from ._ledger import Ledger
from ._loop_thread import on_loop
from ._models import Message, Reply, TokenUsage
from ._options import Options, TurnOptions, check_session_id, check_system
from ._settings import SessionSettings, check_keywords
from ._tools import MAX_TOOL_ROUNDS, Toolbox
from ._turn import Slot, Turn, refuse_inside_turn
from .stores import FileStore, Store
from .stores._file import default_state_dir

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self, Unpack

__all__ = ["DEFAULT_BASE_URL", "MessageStream", "Options", "Session"]

logger = logging.getLogger("tyqw")


class Session(Subscriptions):
    """One conversation with a Bailian application, or (``model=``) with a Qwen model.

    The conversation id is kept in a store per ``(app_id, name)`` (by default a small
    file under ``state_dir``), so a script that restarts continues the same conversation.
    Turns are serialized, across processes too when they share a store. Each turn is
    added to the conversation's transcript in the store (``history()``): the 200 most
    recent by default, ``history=N`` keeps ``N``, ``history=False`` none. When the
    service has forgotten the conversation (an hour idle, 50 rounds: ``expiry=``), the
    next turn sends the transcript's recent exchanges in place of the forgotten id.

    A model session (``Session(model="qwen-plus", system="...")``) talks to DashScope's
    text-generation endpoint instead: the same events, stores and errors, with the
    conversation's id made by tyqw (see the docs' models page). Pass exactly one of
    ``app_id`` and ``model``.

    Example::

        async with Session("YOUR_APP_ID") as session:      # key from DASHSCOPE_API_KEY
            session.on("message", lambda m: print(m.delta, end="", flush=True))
            await session.send("你好，我叫小明")
            await session.send("我叫什么名字？")              # same conversation
            session.clear()                                  # the next send starts anew

        async with Session(model="qwen-plus", system="简洁地回答。") as session:
            await session.send("我叫小明")
            reply = await session.send("我叫什么名字？")      # tyqw sent the history
    """

    def __init__(
        self,
        app_id: str | None = None,
        *,
        http_session: aiohttp.ClientSession | None = None,
        **settings: Unpack[SessionSettings],
    ) -> None:
        check_keywords(type(self).__name__, settings)
        setup_logging()
        self._config = Config(app_id, settings)
        model = settings.get("model")
        name = settings.get("name", "default")
        state_dir = settings.get("state_dir")
        store = settings.get("store")
        tools = settings.get("tools")
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        if store is not None and state_dir is not None:
            raise ValueError("pass state_dir= or store=, not both (state_dir= is FileStore's)")
        if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
            raise TypeError("http_session must be an aiohttp.ClientSession")
        self.name = name
        if store is None:
            store = FileStore(Path(state_dir) if state_dir is not None else default_state_dir())
        self.store: Store = store
        self.state_dir: Path | None = store.directory if isinstance(store, FileStore) else None
        self._system = check_system(settings.get("system"))
        if self._system is not None and model is None:
            raise TypeError("system= is for a model session; an app has its own prompt")
        if tools is not None and model is None:
            raise TypeError("tools= is for a model session; an app has its own plugins")
        rounds = settings.get("max_tool_rounds", MAX_TOOL_ROUNDS)
        self._tools = None if not tools else Toolbox(tools, rounds)
        self._budget = check_budget(settings.get("max_history_chars", DEFAULT_HISTORY_CHARS))
        # A model's conversation id is tyqw's own, which the service cannot forget: no expiry.
        watched = self._config.expiry if model is None else None
        self._conversation = Ledger(
            self.store, self._store_key, name, self._config.history, watched
        )
        if model is not None and not self._conversation.keep and self._config.history:
            logger.warning(
                "tyqw: %s keeps no transcripts, so the model will not remember earlier "
                "turns (see tyqw.stores.TranscriptStore)",
                type(self.store).__name__,
            )
        self._emitter = Emitter()
        self._slot = Slot()
        self._http = http_session
        self._owns_http = http_session is None

    # -- settings ----------------------------------------------------------------------

    @property
    def app_id(self) -> str:
        """The Bailian application id; for a model session ``"model:<model>"``, the name
        its conversations are kept under in the store."""
        return self._store_key

    @property
    def model(self) -> str | None:
        """The model of a model session, such as ``"qwen-plus"`` (``None`` for an app).

        Example::

            Session(model="qwen-plus").model   # "qwen-plus"
        """
        return self._config.model

    @property
    def system(self) -> str | None:
        """The system message a model session sends first on every turn, or ``None``.

        Example::

            Session(model="qwen-plus", system="Be brief.").system   # "Be brief."
        """
        return self._system

    @property
    def _store_key(self) -> str:
        # Where a conversation is kept: an app's id, or the model's name under "model:".
        config = self._config
        return config.app_id if config.app_id is not None else f"model:{config.model}"

    @property
    def base_url(self) -> str:
        """The API base URL, without a trailing slash."""
        return self._config.base_url

    @property
    def workspace(self) -> str | None:
        """The workspace sent as ``X-DashScope-WorkSpace``, or ``None``."""
        return self._config.workspace

    @property
    def max_retries(self) -> int:
        """How many times a turn is retried before any event arrived."""
        return self._config.max_retries

    @property
    def connect_timeout(self) -> float:
        """Seconds to resolve the name, connect and finish the TLS handshake."""
        return self._config.connect_timeout

    @property
    def read_timeout(self) -> float:
        """Seconds without a byte before a streaming reply fails (an idle limit)."""
        return self._config.read_timeout

    @property
    def deadline(self) -> float | None:
        """Seconds a whole turn may take, waiting for the conversation included."""
        return self._config.deadline

    @property
    def max_event_size(self) -> int:
        """The cap on one SSE line or event (and on a JSON answer), in bytes."""
        return self._config.max_event_size

    # -- conversation ------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The id of the conversation, or ``None`` before the first turn.

        Assigning continues that conversation from the next turn; assigning ``None`` (or
        ``""``, which code ported from the TypeScript class keeps before a first turn) is
        ``clear()``. With a local store (the default) the store has it before the
        assignment returns; with a shared store, see ``flush()``.

        Example::

            session.session_id = "5b1f8d2a..."   # continue a conversation from elsewhere
        """
        return self._conversation.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self._conversation.change(None if value in (None, "") else check_session_id(value))

    @property
    def usage(self) -> dict[str, TokenUsage]:
        """Tokens used per model since the conversation started (``clear()`` resets it;
        it is kept in the store with the conversation id).

        Example::

            for model, used in session.usage.items():
                print(model, used.input_tokens, used.output_tokens)
        """
        return dict(self._conversation.usage)

    @property
    def store_path(self) -> Path | None:
        """The file that holds this conversation (``None`` unless the store is a
        ``FileStore``)."""
        if isinstance(self.store, FileStore):
            return self.store.path(self.app_id, self.name)
        return None

    async def history(self) -> list[Exchange]:
        """The conversation's transcript: one ``Exchange`` per turn, oldest first.

        Kept by the store, so every worker sharing it sees the same one; at most the
        ``history=`` most recent exchanges (200 by default). ``StoreError`` if the store
        keeps no transcripts (a store of your own without the ``TranscriptStore``
        methods).

        Example::

            for exchange in await session.history():
                print("you:", exchange.prompt)
                print("app:", exchange.reply.text)
        """
        return await self._conversation.history()

    async def forget(self) -> None:
        """Delete the conversation from the store entirely, its transcript included,
        under its lock: for a user who asks to be forgotten. The next turn starts a new
        conversation. ``StoreError`` if the store fails (then try again).

        Example::

            await session.forget()
        """
        self._slot.check_open()
        refuse_inside_turn(self._slot, "forget()")
        await self._conversation.forget()

    def clear(self) -> None:
        """End the conversation and its transcript: the next turn starts a new one.

        Example::

            session.clear()
            await session.send("你好")       # a fresh conversation, a new session_id
        """
        self._conversation.change(None)

    async def flush(self) -> None:
        """Write a ``session_id`` assignment or ``clear()`` to a shared store now (with a
        local store they are written at once anyway); raises ``StoreError`` if it fails.

        Example::

            session.clear()
            await session.flush()    # every worker now starts this user anew
        """
        await self._conversation.flush()

    # -- events ------------------------------------------------------------------------

    def _subscribe(self, how: str, event: str, handler: Callable[..., object]) -> None:
        if how == "on":
            self._emitter.on(event, handler)
        elif how == "once":
            self._emitter.once(event, handler)
        else:
            self._emitter.remove_listener(event, handler)

    def listeners(self, event: Event) -> list[Callable[..., Any]]:
        """The handlers subscribed to ``event``."""
        return self._emitter.listeners(check_event(event))

    # -- turns -------------------------------------------------------------------------

    async def send(self, prompt: str, **options: Unpack[Options]) -> Reply:
        """Run one turn: stream the reply, emit each event, return the ``Reply``.

        Handlers run in stream order; those of one message finish before those of the
        next start, and all have finished when ``send()`` returns. An error is emitted
        as ``"error"``; with no ``error`` handler, ``send()`` raises it instead.

        Example::

            reply = await session.send("你好", has_thoughts=True)
            print(reply.text, reply.session_id)
        """
        turn = self._turn(prompt, options)
        emitter = self._emitter
        events = TurnEvents(emitter, turn.reply)
        deliver = events.deliver
        items = turn.run(yield_malformed=True, yield_tools=bool(emitter.handlers["tool_call"]))
        raised: TyqwError | None = None
        in_handlers = False  # a TyqwError now is a handler's, not the stream's
        try:
            try:
                async for item in items:
                    in_handlers = True
                    pending = deliver(item)
                    if pending is not None:
                        await pending
                    in_handlers = False
                reply = turn.read_reply()
            except TyqwError as exc:
                if in_handlers:
                    raise
                # The stream failed: the error goes to the "error" handlers, or is raised
                # once the "reply" handlers had the partial reply.
                reply = exc.reply or turn.reply(exc)
                if emitter.errors:
                    await emit_error(emitter, exc)
                else:
                    raised = exc
        except TyqwError as exc:
            # A handler's HandlerError with no "error" handler (or what an "error"
            # handler raised) ends the turn: its exchange records that error.
            if turn.error is None:
                turn.error = exc
            raise
        finally:
            await items.aclose()
        if emitter.replies:
            pending = emit(emitter, "reply", emitter.replies, reply, turn.reply)
            if pending is not None:
                await pending
        if raised is not None:
            raise raised
        return reply

    def stream(self, prompt: str, **options: Unpack[Options]) -> MessageStream:
        """Run one turn as an async iterator of ``Message``; errors are raised, not emitted.

        Leaving the loop (``break``, ``return``, an exception) closes the HTTP response
        and frees the Session for its next turn at once.

        Example::

            async for message in session.stream("讲个笑话"):
                print(message.delta, end="", flush=True)
        """
        return MessageStream(self._turn(prompt, options))

    def _forward(self, body: dict[str, Any], *, stream: bool) -> MessageStream:
        """One relayed generation request, its body as the client sent it (the relay has
        checked it), on a turn slot of its own: relayed requests run side by side."""
        self._slot.check_open()
        options = TurnOptions.forward(body, stream=stream)
        return MessageStream(Turn(self._config, self._client, Slot(), self._conversation, options))

    def abort(self) -> None:
        """End the turn in flight, from anywhere: a handler, another task, another
        thread (a GUI's stop button), at once.

        The response is closed; ``send()`` returns the partial ``Reply`` without an error
        and ``stream()`` simply stops. Does nothing when no turn runs.

        Example::

            session.on("message", lambda m: session.abort() if "再见" in m.text else None)
        """
        turn = self._slot.active
        if turn is not None:
            turn.abort()

    async def aclose(self) -> None:
        """Abort the turn in flight, write what a shared store still lacks, and close the
        HTTP session tyqw created. Idempotent.

        Example::

            session = Session("YOUR_APP_ID")
            try:
                await session.send("你好")
            finally:
                await session.aclose()
        """
        if self._slot.closed:
            return
        self._slot.closed = True
        self.abort()
        try:
            await self._conversation.flush()
        finally:
            if self._owns_http and self._http is not None:
                http, self._http = self._http, None
                await http.close()

    async def __aenter__(self) -> Self:
        self._slot.check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aclose()
            return
        try:
            await self.aclose()
        except TyqwError as close_error:
            # The error leaving the block says what happened (a turn that ran keeps its
            # reply); closing's own failure must not replace it.
            logger.warning("tyqw: could not close the Session after an error: %s", close_error)

    def __repr__(self) -> str:
        state = "closed" if self._slot.closed else "open"
        target = f"app_id={self.app_id!r}" if self.model is None else f"model={self.model!r}"
        return (
            f"<tyqw.Session {target} name={self.name!r} "
            f"session_id={self.session_id!r} base_url={self.base_url!r} {state}>"
        )

    # -- internals ---------------------------------------------------------------------

    def _turn(self, prompt: str, options: Options) -> Turn:
        self._slot.check_open()
        return Turn(
            self._config,
            self._client,
            self._slot,
            self._conversation,
            TurnOptions(
                prompt,
                options,
                model=self._config.model,
                system=self._system,
                tools=self._tools,
                budget=self._budget,
            ),
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._config.timeout)
        return self._http


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

    def __init__(self, turn: Turn) -> None:
        self._turn = turn
        self._iterator = turn.run(yield_malformed=False)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    def __anext__(self) -> Awaitable[Message]:
        # The generator's own awaitable, not a coroutine wrapping it: one less frame
        # per message on the hot path.
        return self._iterator.__anext__()

    @property
    def reply(self) -> Reply:
        """What the turn has produced so far."""
        return self._turn.reply(None)

    def _ahead(self) -> bool:
        """True when the next message is already read and will come without waiting (the
        relay writes the frames of such messages together, in one write)."""
        turn = self._turn
        return not turn.interrupted and turn.reader.ahead()

    def _data(self) -> str | None:
        """The upstream event's JSON of the message just given, when it can be sent on as
        is (the relay then does not encode ``message.raw`` again); else ``None``."""
        return self._turn.reader.data()

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
        # A loop that breaks out (or returns, or raises) drops the last reference here:
        # end the turn now, not when the event loop gets round to finalizing the
        # generator, so the Session's next turn can start at once.
        turn = self._turn
        pending = turn.finish()
        if pending is None:
            return
        loop = turn.loop
        if loop is not None:
            on_loop(loop, lambda: _keep(loop.create_task(pending)))


# Tasks that finish a stream left early: referenced until done, as asyncio asks.
_finishing: set[asyncio.Task[None]] = set()


def _keep(task: asyncio.Task[None]) -> None:
    _finishing.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[None]) -> None:
    _finishing.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        # Nobody awaits this task: a store write that failed is reported here.
        logger.warning("tyqw: could not finish a stream that was left early: %s", error)
