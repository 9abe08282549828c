"""The simulator's server: :class:`BailianSimulator`, from a socket to an answer.

It receives a request, records it, lets a queued fault strike, runs the checks of
:mod:`.validation`, composes the answer (:mod:`.answers`) and writes it as a stream or as
one JSON body (:mod:`.streams`), writing the turn into its conversation once it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .._config import OFFLINE_KEY
from .._wire import SSE_TYPE, accepts_gzip, dumps, error_body, frame, wants_sse
from . import generation
from .answers import Answer, compose, json_payload, stream_payloads
from .apps import Apps, is_reasoning_model
from .conversations import Conversation, Conversations, Memories
from .errors import Refusal
from .faults import Fault, action_of
from .records import SimRequest
from .replies import ReplyFunc, default_reply
from .streams import BodyWriter, EventWriter, Exchange, json_response
from .validation import check_key, read_json, read_question

logger = logging.getLogger("tyqw.simulator")

_ROUTE = re.compile(r".*/apps/([^/]*)/completion/?")
_MODEL_ROUTE = re.compile(r".*/services/aigc/([^/]*)/generation/?")
_MODEL_KINDS = ("text-generation", "multimodal-generation")


class BailianSimulator:
    """A local Bailian app-completion server; an async context manager.

    All arguments are keyword-only. ``api_key=None`` accepts any non-empty Bearer key.
    ``app_ids`` are the apps that exist (default: only the simulator's own, as the
    service refuses an id no app has); ``workspaces`` maps app ids to the
    ``X-DashScope-WorkSpace`` they require and ``workflows`` names workflow apps (both
    kinds exist whatever ``app_ids`` says). ``reply(prompt, history) -> str`` writes the
    answers (default :func:`default_reply`); ``chunk_size`` characters go in each event
    and ``delay`` seconds pass between events; ``model_id`` is the app's model, and
    ``reasoning`` says whether it reasons (None: decided from ``model_id``, e.g.
    ``deepseek-r1`` or ``qwq-plus`` do); conversations end after ``session_ttl`` idle
    seconds or ``max_rounds`` turns; ``sse_errors="http"`` turns the in-band error frame
    for rejected streaming requests into a plain HTTP 4xx JSON answer. ``reply``,
    ``chunk_size``, ``delay``, ``model_id``, ``reasoning``, ``session_ttl`` and
    ``max_rounds`` are also attributes you may change at any time.

    What it does with a request, in order: a path not ending in ``/apps/{id}/completion``
    is 404 ``NotFound``; a method other than POST is 400; a missing or wrong key is HTTP
    401 ``InvalidApiKey`` even on streams; an unknown app id (400 ``InvalidParameter``), a
    missing workspace (403 ``Workspace.AccessDenied``) and a bad body (400) are answered
    on streaming requests the way the service answers a bad app id, as HTTP 200 with one
    ``event:error`` frame carrying ``:HTTP_STATUS/<n>``. ``X-DashScope-SSE: enable`` or
    an ``Accept: text/event-stream`` selects SSE, anything else one JSON body
    (gzip-compressed when ``Accept-Encoding`` allows it; ``"usage": {}`` for workflows).

    Of the parameters, ``incremental_output``, ``has_thoughts`` (thoughts on every
    event: a retrieval thought with ``rag_options``, a memory thought when
    ``input.memory_id`` is sent, a reasoning thought when the model reasons, which
    ``enable_thinking`` overrides), ``rag_options`` (``<ref>[n]</ref>`` citation markers
    in the text, and ``doc_references`` listing the chunks cited so far on every event
    from the first marker on) and ``flow_stream_mode`` ``message_format(_plus)``
    (``workflow_message`` events, then a final ``text`` event) are honoured; other keys
    are ignored. ``input.messages``, when given, is the whole context (a ``prompt`` is
    appended as the last user turn): a live conversation the request names is returned
    but neither read nor written; otherwise the new conversation returned starts from
    the messages' turns, so its id continues from them. A turn joins its conversation
    only once its final event (or JSON body) was sent. Conversations end by tyqw's
    clock, which ``tyqw.testing.advance_clock()`` moves.

    Models are answered too, at ``/services/aigc/text-generation/generation`` (and the
    multimodal one), as the service does: the body checked in its words (``messages``,
    roles, ``tool`` after ``tool_calls``, thinking with ``result_format: "message"`` and
    incremental output, ``json`` for ``json_object``, ranges), the answer written from
    the ``messages`` sent (so "my name is X" then "what is my name?" works), reasoning
    first for thinking models (``enable_thinking``, or a reasoning model's name), a
    deterministic tool call when a tool fits a question about the weather or the time
    in a city (parallel calls with ``parallel_tool_calls``), an answer from the tool
    results once they come back, a running ``usage`` on every chunk, incremental or
    cumulative. ``models`` lists the models that exist (None: any name);
    ``max_input_tokens`` is the context (one token per character), past which a
    request gets ``Range of input length should be [1, n]``::

        async with BailianSimulator(reply=lambda prompt, history: prompt.upper()) as sim:
            url = sim.url_for()  # POST here with Authorization: Bearer {sim.api_key}
            sim.chunk_size = 1
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = OFFLINE_KEY,
        app_ids: Iterable[str] | None = None,
        workspaces: Mapping[str, str] | None = None,
        reply: ReplyFunc | None = None,
        chunk_size: int = 4,
        delay: float = 0.0,
        model_id: str = "qwen-plus",
        session_ttl: float = 3600.0,
        max_rounds: int = 50,
        sse_errors: Literal["frame", "http"] = "frame",
        workflows: Iterable[str] | None = None,
        reasoning: bool | None = None,
        models: Iterable[str] | None = None,
        max_input_tokens: int = 131072,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if sse_errors not in ("frame", "http"):
            raise ValueError('sse_errors must be "frame" or "http"')
        self.host = host
        self.port = port
        self._api_key = api_key
        self._apps = Apps(app_ids, workspaces, workflows)
        self.reply: ReplyFunc = reply or default_reply
        self.chunk_size = chunk_size
        self.delay = delay
        self.model_id = model_id
        self.reasoning = reasoning
        self.models = None if models is None else frozenset(models)
        self.max_input_tokens = max_input_tokens
        self._conversations = Conversations(session_ttl, max_rounds)
        self._memories = Memories()
        self._sse_errors = sse_errors
        #: Every request received, in arrival order.
        self.requests: list[SimRequest] = []
        self._faults: deque[Fault] = deque()
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
        return self._api_key or OFFLINE_KEY

    @property
    def app_id(self) -> str:
        """An app id the simulator accepts (the first of ``app_ids`` when given).

        For example::

            url = f"{sim.base_url}/apps/{sim.app_id}/completion"
        """
        return self._apps.first

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

    @property
    def session_ttl(self) -> float:
        """Idle seconds after which a conversation ends (default one hour)."""
        return self._conversations.ttl

    @session_ttl.setter
    def session_ttl(self, value: float) -> None:
        self._conversations.ttl = value

    @property
    def max_rounds(self) -> int:
        """Turns after which a conversation ends (default 50)."""
        return self._conversations.max_rounds

    @max_rounds.setter
    def max_rounds(self, value: int) -> None:
        self._conversations.max_rounds = value

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
        """The stored ``(user, assistant)`` turns of a live conversation, or None.

        For example::

            assert sim.history(sid) == [("我叫小明", "很高兴认识你，小明！...")]
        """
        conversation = self._conversations.live(session_id)
        return list(conversation.history) if conversation else None

    def expire_sessions(self, *session_ids: str) -> None:
        """End the given conversations (all of them if none are given), as if they expired.

        The next request naming one gets a fresh conversation under a new id::

            sim.expire_sessions(reply.session_id)
        """
        self._conversations.expire(*session_ids)

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
        model_route = None if route else _MODEL_ROUTE.fullmatch(request.path)
        rec = SimRequest(
            method=request.method,
            path=request.path,
            app_id=route.group(1) if route else None,
            headers=headers,
            body=read_json(raw),
            raw_body=raw,
            sse=wants_sse(headers),
            request_id=str(uuid.uuid4()),
        )
        self.requests.append(rec)
        if (route or model_route) and self._faults:
            rec.fault = self._faults.popleft()
        ex = Exchange(request)
        try:
            if model_route:
                return await self._respond_model(ex, rec, model_route.group(1))
            return await self._respond(ex, rec)
        except asyncio.CancelledError:
            rec.disconnected = True
            raise
        except ConnectionError:
            rec.disconnected = True
            return ex.resp or web.Response()
        finally:
            rec.done.set()

    async def _respond(self, ex: Exchange, rec: SimRequest) -> web.StreamResponse:
        fault = rec.fault
        if fault is not None:
            early = await action_of(fault).at_gateway(fault, ex, rec.request_id)
            if early is not None:
                return early
        try:
            answer = self._answer(rec)
        except Refusal as refusal:
            return self._refuse(rec, refusal)
        rec.session_id = answer.session_id
        if rec.sse:
            payloads = stream_payloads(answer, self.chunk_size)
            return await self._stream(ex, answer, payloads, fault, lambda: self._commit(answer))
        body = dumps(json_payload(answer)).encode()
        out = BodyWriter(
            ex, answer.request_id, body, lambda: self._commit(answer), accepts_gzip(rec.headers)
        )
        if fault is None:
            return await out.finish()
        return await action_of(fault).in_body(fault, out, answer)

    async def _respond_model(self, ex: Exchange, rec: SimRequest, kind: str) -> web.StreamResponse:
        fault = rec.fault
        if fault is not None:
            early = await action_of(fault).at_gateway(fault, ex, rec.request_id)
            if early is not None:
                return early
        try:
            answer = self._generate(rec, kind)
        except Refusal as refusal:
            return self._refuse(rec, refusal)
        if rec.sse:
            payloads = generation.stream_payloads(answer, self.chunk_size)
            return await self._stream(ex, answer, payloads, fault, None)
        body = dumps(generation.json_payload(answer)).encode()
        out = BodyWriter(ex, answer.request_id, body, _nothing, accepts_gzip(rec.headers))
        if fault is None:
            return await out.finish()
        return await action_of(fault).in_body(fault, out, answer)

    def _generate(self, rec: SimRequest, kind: str) -> generation.Generation:
        if kind not in _MODEL_KINDS:
            raise Refusal(400, "InvalidParameter", generation.URL_ERROR, inband=False)
        if rec.method != "POST":
            message = f"Request method '{rec.method}' is not supported."
            raise Refusal(400, "InvalidParameter", message, inband=False)
        check_key(rec.headers, self._api_key)
        request = generation.read_generation(
            rec.body, sse=rec.sse, max_input_tokens=self.max_input_tokens
        )
        if self.models is not None and request.model not in self.models:
            raise Refusal(400, "InvalidParameter", generation.NO_MODEL, inband=True)
        return generation.compose(
            request,
            request_id=rec.request_id,
            reply=self._write,
            reasoning_model=self.reasoning,
            multimodal=kind == "multimodal-generation",
        )

    def _answer(self, rec: SimRequest) -> Answer:
        if rec.app_id is None:
            raise Refusal(404, inband=False)
        if rec.method != "POST":
            message = f"Request method '{rec.method}' is not supported."
            raise Refusal(400, "InvalidParameter", message, inband=False)
        check_key(rec.headers, self._api_key)
        self._apps.check(rec.app_id, rec.headers.get("x-dashscope-workspace"))
        question = read_question(rec.body)
        session_id, opened = self._conversations.open(question.session_id)
        conversation: Conversation | None = opened
        history = list(opened.history)
        if question.history is not None:
            # messages carry the context and win over session_id: a live conversation
            # the request names is neither read nor written. A new one starts from
            # them, so that the id returned continues what the messages said.
            history = question.history
            if session_id == question.session_id:
                conversation = None
            else:
                opened.history.extend(history)
        memory_id = question.memory_id
        reasoning = self.reasoning
        return compose(
            request_id=rec.request_id,
            session_id=session_id,
            prompt=question.prompt,
            history=history,
            text=self._write(question.prompt, history),
            parameters=question.parameters,
            model_id=self.model_id,
            reasoning_model=is_reasoning_model(self.model_id) if reasoning is None else reasoning,
            workflow_app=self._apps.is_workflow(rec.app_id),
            conversation=conversation,
            memory_id=memory_id,
            memories=self._memories.recall(memory_id) if memory_id else [],
        )

    def _write(self, prompt: str, history: list[tuple[str, str]]) -> str:
        try:
            text = self.reply(prompt, list(history))
            if not isinstance(text, str):
                raise TypeError(f"reply() returned {type(text).__name__}, not str")
        except Exception:
            logger.exception("the simulator's reply function failed")
            raise Refusal(500, inband=True) from None
        return text

    def _commit(self, answer: Answer) -> None:
        if answer.conversation is not None:
            self._conversations.add_turn(
                answer.session_id, answer.conversation, answer.prompt, answer.text
            )
        if answer.memory_id is not None:
            self._memories.remember(answer.memory_id, answer.prompt)

    def _refuse(self, rec: SimRequest, refusal: Refusal) -> web.Response:
        error = error_body(refusal.code, refusal.message, rec.request_id)
        if not (rec.sse and refusal.inband and self._sse_errors == "frame"):
            return json_response(refusal.status, error, rec.request_id)
        # The captured answer to a bad app id: HTTP 200, one error frame, no blank line.
        return web.Response(
            status=200,
            body=frame(1, dumps(error), event="error", status=refusal.status, end=False),
            headers={
                "Content-Type": SSE_TYPE,
                "x-request-id": rec.request_id,
                "x-dashscope-finished": "true",
            },
        )

    async def _stream(
        self,
        ex: Exchange,
        answer: Answer | generation.Generation,
        payloads: list[dict[str, Any]],
        fault: Fault | None,
        commit: Callable[[], None] | None,
    ) -> web.StreamResponse:
        action = action_of(fault)
        out = EventWriter(ex, answer.request_id)
        await out.open(finished=fault is not None and action.opens_finished(fault))
        # The fault strikes once `after` events were sent; past the end, after the last.
        strike = -1 if fault is None else min(fault.after, len(payloads))

        async def goes_on() -> bool:
            return fault is None or await action.in_stream(fault, out, answer)

        for index, payload in enumerate(payloads):
            if index == strike and not await goes_on():
                return out.response
            if index and self.delay:
                await asyncio.sleep(self.delay)
            await out.result(dumps(payload))
        if commit is not None:
            commit()
        if strike == len(payloads) and not await goes_on():
            return out.response
        return await out.end()


def _nothing() -> None:
    """A model's answer joins no conversation: the client keeps the history."""
