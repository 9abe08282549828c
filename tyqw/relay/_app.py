"""``create_app()``: the relay as an aiohttp application, and its request handlers.

A completion request goes: origin check, user, app id, rate limit, body, the user's
``session_id``; then one ``Session.stream()`` turn whose messages are written out as
they arrive, one Bailian frame per message. The turn runs in a child task that is
cancelled the moment the client's connection closes (aiohttp tells a handler of a
disconnect only when it writes, and a turn may wait a long time between events), and
cancelling it closes the upstream response at once.

``GET /api/v1/apps/{app_id}/history`` answers the caller's own current conversation:
its ``session_id`` and its transcript (``Exchange.to_dict()`` each), for the page to
draw on load. The user comes from the request's authentication, as for a turn; there is
no way to name another.

A client may keep several conversations per user by naming each in an
``X-Tyqw-Conversation`` header (the chat page does); ``GET .../conversations`` lists the
caller's named conversations, ``GET`` / ``DELETE .../conversations/{id}`` reads (its
transcript) or deletes one. The user always comes from the request's authentication.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiohttp import web

from .. import MessageStream, Options, TyqwError
from .._config import MODEL_PATH, OFFLINE_KEY, environment_app_id
from .._options import check_seconds
from .._wire import dumps, error_body, frame, wants_sse
from ..stores import Store
from ._auth import (
    ANONYMOUS,
    Authenticate,
    FailedAuthentications,
    TokenTable,
    identify,
    load_tokens,
    only_loopback,
    parse_origins,
    same_origin,
)
from ._gone import Writing, hang_up, read_within, unless_gone
from ._openai import OpenAI
from ._page import Page
from ._rate import LimitUnavailable, MemoryRateLimit, RateLimit, RedisRateLimit
from ._request import Refused, TurnRequest, invalid, parse_generation, parse_turn
from ._responses import json_response, refusal, start_sse, upstream_error
from ._trace import TraceUser, note_user, tracing
from ._uistream import UIStream
from ._users import CONVERSATION_ID, NotCurrent, UserSessions, store_location

__all__ = ["create_app"]

logger = logging.getLogger("tyqw.relay")

_CORS_HEADERS = (
    "Authorization, Content-Type, Accept, Cache-Control, Last-Event-ID, "
    "X-DashScope-SSE, X-Accel-Buffering, X-DashScope-WorkSpace, X-Tyqw-Conversation"
)
_SESSION_OPTIONS = frozenset(
    {
        "max_retries",
        "connect_timeout",
        "read_timeout",
        "deadline",
        "max_event_size",
        "allow_insecure_http",
    }
)


def create_app(
    app_ids: str | Iterable[str] | None = None,
    *,
    tokens: Mapping[str, str] | str | os.PathLike[str] | None = None,
    authenticate: Authenticate | None = None,
    allow_anonymous: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
    cors: Iterable[str] = (),
    rate: int | None = 30,
    api_key: str | None = None,
    base_url: str | None = None,
    workspace: str | None = None,
    max_prompt: int = 8000,
    biz_params: Iterable[str] = (),
    turn_options: Mapping[str, Any] | None = None,
    page: bool = True,
    session_options: Mapping[str, Any] | None = None,
    body_timeout: float = 30.0,
    send_timeout: float = 60.0,
    trace_user: TraceUser = None,
    models: Iterable[str] = (),
    max_messages: int = 100,
    aliases: Mapping[str, str] | None = None,
) -> web.Application:
    """A relay that lets browsers and SDKs chat with Bailian apps without the key.

    It serves ``POST /api/v1/apps/{app_id}/completion`` with the service's own request
    body and wire answer (SSE when the client sends ``X-DashScope-SSE: enable`` or
    ``Accept: text/event-stream``, else one JSON answer), and the chat page at ``/``.
    Mount it under a prefix with ``parent.add_subapp("/tyqw", create_app(...))``.

    - ``app_ids``: the only apps served (default ``DASHSCOPE_APP_ID``).
    - Users: ``tokens`` (``{token: user}`` or a tokens file, see ``load_tokens``) or
      ``authenticate(request) -> user | None`` (may be async). With neither, pass
      ``allow_anonymous=True``: everyone is the one user ``"local"`` and only requests
      from a loopback address (the peer's socket, not its ``Host`` header) to a
      loopback host name are answered.
    - ``GET /api/v1/apps/{app_id}/history`` (authenticated as a turn is) answers the
      caller's current conversation: ``{"session_id": ..., "exchanges": [...]}``, each
      exchange as ``tyqw.Exchange.to_dict()`` gives it, oldest first. The page draws it
      on load, so a reload or a second tab shows the conversation as it was.
    - ``store``: where each user's conversation lives: ``"memory"`` (the default,
      ``None``), a folder (a ``FileStore``), ``redis://...`` / ``rediss://...`` (a
      ``RedisStore``: every relay worker on that Redis continues the same conversations
      and shares the rate limit), or a ``tyqw.stores.Store`` of your own making. The
      relay closes a store it made when it stops, never one you passed (the rate limit
      of a store you pass is kept per worker process).
    - Named conversations (docs/chat-page.md): a turn with ``X-Tyqw-Conversation: <id>``
      uses the caller's conversation of that id; ``GET .../conversations`` lists the
      caller's, ``GET`` / ``DELETE .../conversations/{id}`` reads or deletes one. A user
      name holding a NUL is refused (403).
    - ``cors``: the origins other sites' pages may call it from; ``rate``: turns per
      user per minute (``None``: no limit); ``max_prompt``: characters per prompt;
      ``biz_params``: the ``input.biz_params`` keys clients may send;
      ``turn_options``: ``Session.stream()`` options added to every turn
      (``rag_options``, ``memory_id``...); what a client may send goes on top, its
      ``biz_params`` keys merged into these.
    - The upstream: ``api_key`` (default ``DASHSCOPE_API_KEY``; never taken from a
      request; the offline simulator's own key makes the page say it is offline),
      ``base_url``, ``workspace``, and ``session_options`` for each user's
      ``Session`` (``read_timeout``, ``deadline``, ``max_retries``...).
    - ``models``: Qwen models served at the service's own generation endpoint,
      ``POST /api/v1/services/aigc/text-generation/generation``, the client's body sent
      on as it is once checked: a model of this list, 1 to ``max_messages`` messages of
      at most ``max_prompt`` characters each, and only the generation parameters a
      chat needs. The client keeps the history there, as with the service. OpenAI
      clients reach them at ``/v1/chat/completions`` too (docs/openai.md). The same caps
      hold for the ``input.messages`` of an app's turn (the context a client sends in
      place of a forgotten conversation).
    - ``aliases``: other names for a served app id or model, ``{"gpt-4o": "APP_ID"}``,
      for clients that offer a fixed list of model names: ``GET /v1/models`` lists them
      and ``/v1/chat/completions`` and ``/api/chat`` take them.
    - Clients that stall: a request body not received within ``body_timeout`` seconds
      (default 30) is answered 408 ``RequestTimeOut`` and its connection closed; a
      client that reads nothing of a streamed answer for ``send_timeout`` seconds
      (default 60) is disconnected, its upstream request closed and its conversation
      unlocked. A request head that stalls, and the number of open connections, are
      the server's to bound: ``tyqw serve`` does (``--head-timeout``,
      ``--max-connections``...); behind your own server, set aiohttp's
      ``keepalive_timeout`` and put a proxy with connection limits in front.
    - Telemetry (docs/telemetry.md): with an OpenTelemetry provider configured, each
      request is a SERVER span continuing the caller's ``traceparent``, the turn its
      child. ``trace_user``: the user on that span as ``"id"`` (``user.id``), ``"hash"``
      (``user.hash``, a SHA-256 prefix) or ``f(user) -> str``; ``None`` (the default): not
      at all.

    Example::

        from aiohttp import web
        from tyqw.relay import create_app

        app = web.Application()
        app.add_subapp("/tyqw", create_app(["YOUR_APP_ID"], tokens="tokens.txt"))
        web.run_app(app, port=8000, handler_cancellation=True)
    """
    served_models = tuple(dict.fromkeys(models))
    ids = _app_ids(app_ids, allow_none=bool(served_models))
    if not isinstance(max_messages, int) or max_messages < 1:
        raise ValueError("max_messages must be a number of messages >= 1")
    if authenticate is not None and tokens is not None:
        raise ValueError("pass tokens or authenticate, not both")
    if tokens is not None:
        table = tokens if isinstance(tokens, Mapping) else load_tokens(tokens)
        authenticate = TokenTable(table)
    auth_kind = "token" if tokens is not None else "custom"
    if authenticate is None and not allow_anonymous:
        raise ValueError(
            "no authentication: pass tokens= or authenticate=, or allow_anonymous=True "
            "for a relay that only answers on loopback"
        )
    origins = parse_origins(cors)
    if rate is not None and (not isinstance(rate, int) or rate < 1):
        raise ValueError("rate must be a whole number of turns per minute >= 1, or None")
    if not isinstance(max_prompt, int) or max_prompt < 1:
        raise ValueError("max_prompt must be a number of characters >= 1")
    body_timeout = check_seconds("body_timeout", body_timeout)
    send_timeout = check_seconds("send_timeout", send_timeout)
    where = store_location(store)
    extra = dict(session_options or {})
    unknown = sorted(set(extra) - _SESSION_OPTIONS)
    if unknown:
        raise ValueError(f"session_options does not take {unknown[0]!r}")
    fixed = dict(turn_options or {})
    unknown = sorted(set(fixed) - (set(Options.__annotations__) - {"stream"}))
    if unknown:
        raise ValueError(f"turn_options does not take {unknown[0]!r}")
    options = {"api_key": api_key, "base_url": base_url, "workspace": workspace, **extra}

    sessions = UserSessions(where, options)
    for app_id in ids:
        sessions.check(app_id)  # a bad id, key or base_url fails here, not per turn
    for model in served_models:
        sessions.check_model(model)
    named = _aliases(aliases, ids, served_models)
    relay = _Relay(
        app_ids=ids,
        authenticate=authenticate,
        cors=origins,
        rate=rate,
        sessions=sessions,
        max_prompt=max_prompt,
        biz_params=frozenset(biz_params),
        turn_options=fixed,
        auth_kind=auth_kind,
        body_timeout=body_timeout,
        send_timeout=send_timeout,
        offline=api_key == OFFLINE_KEY,
        models=served_models,
        max_messages=max_messages,
        aliases=named,
    )
    app = web.Application(middlewares=[tracing(trace_user)])
    app.cleanup_ctx.append(relay.lifetime)
    completion = "/api/v1/apps/{app_id}/completion"
    app.router.add_post(completion, relay.completion)
    app.router.add_route("OPTIONS", completion, relay.preflight)
    history = "/api/v1/apps/{app_id}/history"
    app.router.add_get(history, relay.history)
    app.router.add_route("OPTIONS", history, relay.preflight)
    listing = "/api/v1/apps/{app_id}/conversations"
    app.router.add_get(listing, relay.list_conversations)
    app.router.add_route("OPTIONS", listing, relay.preflight)
    one = listing + "/{conversation}"
    app.router.add_get(one, relay.read_conversation)
    app.router.add_delete(one, relay.delete_conversation)
    app.router.add_route("OPTIONS", one, relay.preflight)
    if served_models:
        generation = "/api/v1" + MODEL_PATH
        app.router.add_post(generation, relay.generation)
        app.router.add_route("OPTIONS", generation, relay.preflight)
    if page:
        app.router.add_get("/", relay.page)
    app.router.add_get("/relay.json", relay.settings)
    OpenAI(relay).add_routes(app)
    UIStream(relay).add_routes(app)
    return app


class _Relay:
    def __init__(
        self,
        *,
        app_ids: tuple[str, ...],
        authenticate: Authenticate | None,
        cors: frozenset[str],
        rate: int | None,
        sessions: UserSessions,
        max_prompt: int,
        biz_params: frozenset[str],
        turn_options: dict[str, Any],
        auth_kind: str,
        body_timeout: float,
        send_timeout: float,
        offline: bool,
        models: tuple[str, ...] = (),
        max_messages: int = 100,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.app_ids = app_ids
        self.aliases = aliases or {}
        self.offline = offline  # the upstream is tyqw's simulator: the page says so
        self.models = models
        self.max_messages = max_messages
        self.authenticate = authenticate
        self.cors = cors
        self.rate = rate
        self.sessions = sessions
        self.max_prompt = max_prompt
        self.biz_params = biz_params
        self.turn_options = turn_options
        self.auth_kind = auth_kind
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        # A prompt of max_prompt characters, each up to 4 UTF-8 bytes or a 6-byte JSON
        # escape, plus room for biz_params and the rest of the body.
        self.body_limit = max_prompt * 6 + 64 * 1024
        self.limit: RateLimit | None = None
        self.failures = FailedAuthentications()
        self.chat_page = Page.load()

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        await self.sessions.start()
        if self.rate is not None:
            location = self.sessions.location
            if location is not None and location.kind == "redis":  # one limit for every worker
                self.limit = RedisRateLimit(location.target, self.rate)
            else:
                self.limit = MemoryRateLimit(self.rate)
        try:
            yield
        finally:
            await self.sessions.aclose()
            if self.limit is not None:
                await self.limit.aclose()

    # -- the endpoint ------------------------------------------------------------

    async def completion(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        sse = wants_sse(request.headers)
        try:
            user = await self._user(request)
            note_user(user)
            app_id = request.match_info["app_id"]
            if app_id not in self.app_ids:
                raise Refused(404, "NotFound", "This relay does not serve that app id.")
            await self._spend(user)
            raw = await self._body(request)
            turn = parse_turn(
                raw,
                max_prompt=self.max_prompt,
                biz_params=self.biz_params,
                max_messages=self.max_messages,
            )
            conversation = _conversation(request.headers.get("X-Tyqw-Conversation"))
        except Refused as refused:
            answer = refusal(refused, request_id, sse, cors)
            if refused.status == 408:
                return await hang_up(request, answer)
            return answer
        # No session_id: a new conversation, as on the service. Any other id than the
        # user's current one is refused by the turn itself, under the store's lock.
        async with self.sessions.use(app_id, user, turn.session_id, conversation) as session:
            stream = session.stream(turn.prompt, **self._options(turn, sse))
            writing = Writing()
            if sse:
                work = self._sse(request, stream, cors, request_id, writing)
            else:
                work = self._json(stream, cors, request_id)
            return await unless_gone(request, work, writing, self.send_timeout)

    async def generation(self, request: web.Request) -> web.StreamResponse:
        """A model's generation request: checked, then sent on with the server's key."""
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        sse = wants_sse(request.headers)
        try:
            user = await self._user(request)
            note_user(user)
            await self._spend(user)
            # A whole conversation's messages: room for several prompts' worth.
            limit = self.body_limit * 4
            raw = await self._body(request, limit)
            body = parse_generation(
                raw,
                models=self.models,
                max_prompt=self.max_prompt,
                max_messages=self.max_messages,
            )
        except Refused as refused:
            return refusal(refused, request_id, sse, cors)
        stream = self.sessions.forwarder()._forward(body, stream=sse)
        writing = Writing()
        if sse:
            work = self._sse(request, stream, cors, request_id, writing)
        else:
            work = self._json(stream, cors, request_id)
        return await unless_gone(request, work, writing, self.send_timeout)

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if origin not in self.cors:
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    # -- the caller's named conversations ------------------------------------------

    async def _own(self, request: web.Request) -> tuple[str, str]:
        """The app id and the caller's user, or ``Refused``."""
        user = await self._user(request)
        note_user(user)
        app_id = request.match_info["app_id"]
        if app_id not in self.app_ids:
            raise Refused(404, "NotFound", "This relay does not serve that app id.")
        return app_id, user

    async def list_conversations(self, request: web.Request) -> web.Response:
        """``{"conversations": [{"id", "title", "updated_at"}, ...]}``, newest first."""
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        try:
            app_id, user = await self._own(request)
            listed = await self.sessions.listed(app_id, user)
        except Refused as refused:
            return refusal(refused, request_id, False, cors)
        except TyqwError as exc:
            status, error = upstream_error(exc, request_id)
            return json_response(status, error, cors, request_id)
        return json_response(200, {"conversations": listed}, cors, request_id)

    async def read_conversation(self, request: web.Request) -> web.Response:
        """``{"id", "session_id", "exchanges": [Exchange.to_dict(), ...]}``, or a 404."""
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        try:
            app_id, user = await self._own(request)
            conversation = _conversation(request.match_info["conversation"])
            assert conversation is not None
            found = await self.sessions.read(app_id, user, conversation)
            if found is None:
                raise Refused(404, "NotFound", "You have no conversation with that id.")
        except Refused as refused:
            return refusal(refused, request_id, False, cors)
        except TyqwError as exc:
            status, error = upstream_error(exc, request_id)
            return json_response(status, error, cors, request_id)
        session_id, exchanges = found
        body = {
            "id": conversation,
            "session_id": session_id,
            "exchanges": [exchange.to_dict() for exchange in exchanges],
        }
        return json_response(200, body, cors, request_id)

    async def delete_conversation(self, request: web.Request) -> web.StreamResponse:
        """Forget one of the caller's conversations (record and transcript): 204."""
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        try:
            app_id, user = await self._own(request)
            conversation = _conversation(request.match_info["conversation"])
            assert conversation is not None
            await self.sessions.forget(app_id, user, conversation)
        except Refused as refused:
            return refusal(refused, request_id, False, cors)
        except TyqwError as exc:
            status, error = upstream_error(exc, request_id)
            return json_response(status, error, cors, request_id)
        return web.Response(status=204, headers={**cors, "x-request-id": request_id})

    async def history(self, request: web.Request) -> web.Response:
        """The caller's own current conversation: its id and transcript."""
        request_id = str(uuid.uuid4())
        cors = self._cors(request)
        try:
            app_id, user = await self._own(request)
        except Refused as refused:
            return refusal(refused, request_id, False, cors)
        try:
            session_id, exchanges = await self.sessions.current(app_id, user)
        except TyqwError as exc:
            status, error = upstream_error(exc, request_id)
            return json_response(status, error, cors, request_id)
        current = {"session_id": session_id, "exchanges": [e.to_dict() for e in exchanges]}
        return json_response(200, current, cors, request_id)

    async def _user(self, request: web.Request) -> str:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.cors and not same_origin(origin, request):
            raise Refused(
                403, "AccessDenied", "This relay does not accept requests from that origin."
            )
        if self.authenticate is None:
            only_loopback(request)
            return ANONYMOUS
        # request.remote: the socket's peer, or the client a forwarded-header middleware
        # of the operator's app names (behind a proxy, every client would share one).
        address = request.remote or ""
        wait = self.failures.wait(address)
        if wait is not None:
            raise Refused(
                429,
                "Throttling",
                "Too many failed authentications from your address; try again later.",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        user = await identify(self.authenticate, request)
        if user is not None and "\0" in user:
            # A NUL separates a user from the name of one of their conversations: a user
            # named with one could spell another user's conversations.
            raise Refused(403, "AccessDenied", "This user name cannot be used here.")
        if user is None:
            self.failures.failed(address)
            raise Refused(
                401,
                "InvalidApiKey",
                "No valid relay token: send Authorization: Bearer <your token for this relay>.",
                headers={"WWW-Authenticate": 'Bearer realm="tyqw"'},
            )
        return user

    async def _body(self, request: web.Request, limit: int | None = None) -> bytes:
        """The request's body, within the body timeout; one larger than ``limit``
        (default: the relay's body limit) is a 400."""
        limit = limit or self.body_limit
        raw = await read_within(request, limit + 1, self.body_timeout)
        if len(raw) > limit:
            raise invalid(f"the request body is larger than {limit} bytes")
        return raw

    async def _spend(self, user: str) -> None:
        if self.limit is None:
            return
        try:
            wait = await self.limit.hit(user)
        except LimitUnavailable as exc:
            logger.warning("tyqw.relay: %s", exc)
            raise Refused(
                503, "ServiceUnavailable", "The relay's rate limit store is unavailable."
            ) from None
        if wait is not None:
            raise Refused(
                429,
                "Throttling",
                "Requests throttling triggered.",
                headers={
                    "Retry-After": str(max(1, math.ceil(wait))),
                    "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                },
            )

    async def _sse(
        self,
        request: web.Request,
        stream: MessageStream,
        cors: dict[str, str],
        request_id: str,
        writing: Writing,
    ) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        event_id = 0
        data, keep = stream._data, writing.keep
        async with stream:
            try:
                async for message in stream:
                    if response is None:
                        writing.since = time.monotonic()
                        response = await start_sse(request, cors, message.request_id or request_id)
                        writing.since = None
                    event_id += 1
                    # The event's JSON goes on as the upstream wrote it (message.raw is
                    # that JSON decoded, unchanged); the frames of messages already read
                    # go out together (see Writing).
                    passed = data()
                    if passed is None:
                        passed = dumps(message.raw)
                    if keep(frame(event_id, passed), stream):
                        await writing.send(response)
            except NotCurrent:
                return refusal(_not_yours(), request_id, True, cors)
            except TyqwError as exc:
                status, body = upstream_error(exc, request_id)
                if response is None:
                    writing.since = time.monotonic()
                    response = await start_sse(request, cors, body["request_id"])
                event_id += 1
                await writing.send(
                    response, frame(event_id, dumps(body), event="error", status=status)
                )
        if response is None:  # the relay is stopping: the turn ended before any event
            writing.since = time.monotonic()
            response = await start_sse(request, cors, request_id)
        await writing.send(response, last=True)
        return response

    async def _json(
        self, stream: MessageStream, cors: dict[str, str], request_id: str
    ) -> web.Response:
        async with stream:
            try:
                messages = [message async for message in stream]
            except NotCurrent:
                return refusal(_not_yours(), request_id, False, cors)
            except TyqwError as exc:
                status, body = upstream_error(exc, request_id)
                return json_response(status, body, cors, body["request_id"])
        if not messages:
            body = error_body("ServiceUnavailable", "The relay is stopping.", request_id)
            return json_response(503, body, cors, request_id)
        raw = messages[-1].raw
        return json_response(200, raw, cors, messages[-1].request_id or request_id)

    def _options(self, turn: TurnRequest, sse: bool) -> dict[str, Any]:
        options = {**self.turn_options, **turn.options}
        if "biz_params" in self.turn_options and "biz_params" in turn.options:
            options["biz_params"] = {
                **self.turn_options["biz_params"],
                **turn.options["biz_params"],
            }
        # Bailian's default is cumulative text; a client that did not ask for increments
        # gets what the service would have sent it.
        options.setdefault("incremental_output", False)
        if not sse:
            options["stream"] = False
        return options

    # -- the page ----------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return self.chat_page.response()

    async def settings(self, request: web.Request) -> web.Response:
        """What the page needs to know: the apps, and whether it needs a token."""
        if self.authenticate is None:
            try:
                only_loopback(request)
            except Refused as refused:
                return refusal(refused, str(uuid.uuid4()), False, {})
        settings = {
            "app_ids": list(self.app_ids),
            # "token": the page asks for one; "custom": your hook decides (a cookie of
            # your site, say), so the page sends without one and asks only on a 401.
            "auth": "none" if self.authenticate is None else self.auth_kind,
            "max_prompt": self.max_prompt,
            "offline": self.offline,
        }
        return web.json_response(settings, headers={"Cache-Control": "no-store"})

    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None or origin not in self.cors:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "x-request-id, Retry-After",
            "Vary": "Origin",
        }


def _not_yours() -> Refused:
    return invalid(
        "input.session_id is not your current conversation; send no session_id to start a new one"
    )


def _conversation(value: str | None) -> str | None:
    """A client's conversation id, checked; ``None``: the user's one conversation."""
    if value is None:
        return None
    if not CONVERSATION_ID.fullmatch(value):
        raise invalid(
            "a conversation id is 1 to 64 letters, digits, '-' or '_' "
            "(X-Tyqw-Conversation, or the path)"
        )
    return value


def _app_ids(app_ids: str | Iterable[str] | None, *, allow_none: bool) -> tuple[str, ...]:
    if app_ids is None:
        app_ids = environment_app_id() or ()
    ids = (app_ids,) if isinstance(app_ids, str) else tuple(app_ids)
    if not ids and not allow_none:
        raise ValueError("no app ids: pass the Bailian app ids to serve (or set DASHSCOPE_APP_ID)")
    return tuple(dict.fromkeys(ids))


def _aliases(
    aliases: Mapping[str, str] | None, app_ids: tuple[str, ...], models: tuple[str, ...]
) -> dict[str, str]:
    """``{alias: target}``, each target served and each alias a name of its own."""
    named: dict[str, str] = {}
    for alias, target in (aliases or {}).items():
        if not isinstance(alias, str) or not alias.strip() or not isinstance(target, str):
            raise ValueError(f"an alias is a name for a served app id or model, not {alias!r}")
        if alias in app_ids or alias in models:
            raise ValueError(f"the alias {alias!r} is already the name of a served app or model")
        if target not in app_ids and target not in models:
            raise ValueError(
                f"the alias {alias!r} names {target!r}, which this relay does not serve "
                "(pass it as an app id or a model)"
            )
        named[alias] = target
    return named
