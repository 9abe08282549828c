"""The AI SDK UI message stream: ``POST /api/chat``, what ``useChat`` calls by default.

The request is the ``DefaultChatTransport``'s: ``{id, messages, trigger, messageId?}``
plus whatever the page adds to ``body`` (``model``: one of the served app ids; the first
by default). The chat ``id`` names the conversation; the messages' text parts are the
history and the prompt (see ``_dialect``: a regenerated or edited turn starts from the
client's history). The answer is ``x-vercel-ai-ui-message-stream: v1`` SSE: ``start``
(the message id, the conversation in its metadata), ``start-step``, thoughts as
``reasoning-*`` parts, the text as ``text-*`` parts (citation markers as plain ``[n]``),
cited documents as ``source-document`` parts, workflow node events as ``data-workflow``
parts (one per node, updated in place), ``finish-step``, then ``finish`` with the
``session_id`` and token usage as message metadata, and ``[DONE]``. A turn that fails
sends an ``error`` part before ``finish``; a request refused before the turn (token,
rate limit, body) is a plain HTTP error whose text the client shows.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from .. import MessageStream, TyqwError
from .._wire import dumps
from ._dialect import (
    ChatTurn,
    Host,
    Plan,
    Reading,
    Role,
    advance,
    check_key,
    check_prompt,
    plan,
    preflight,
    read_json,
    token_counts,
    turn_options,
    user,
    workflow_data,
)
from ._gone import Writing, hang_up, unless_gone
from ._request import Refused, invalid
from ._responses import upstream_error
from ._users import NotCurrent

__all__ = ["UIStream"]

_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}
_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "Connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "X-Accel-Buffering": "no",
}
_DONE = b"data: [DONE]\n\n"


def _chunk(part: dict[str, Any]) -> bytes:
    return b"data: " + dumps(part).encode() + b"\n\n"


def _refusal(refused: Refused, request_id: str, cors: dict[str, str]) -> web.Response:
    # The transport throws Error(await response.text()): the text is what the user sees.
    return web.Response(
        status=refused.status,
        text=refused.message,
        headers={
            "Cache-Control": "no-store",
            "x-request-id": request_id,
            **cors,
            **refused.headers,
        },
    )


def _text(message: dict[str, Any], where: str) -> str:
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise invalid(f"{where}.parts must be a list")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            raise invalid(f"{where}.parts must hold objects")
        if part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"{where} has a text part without text")
            texts.append(part["text"])
    return "".join(texts)


def parse(body: dict[str, Any], name: str, host: Host) -> ChatTurn:
    """The turn a ``DefaultChatTransport`` request asks for."""
    chat_id = body.get("id")
    if not isinstance(chat_id, str):
        raise invalid("id must be the chat's id, a string")
    check_key(chat_id, "id (the chat's id)")
    model = body.get("model", host.app_ids[0] if host.app_ids else None)
    if isinstance(model, str):
        model = host.aliases.get(model, model)
    if model not in host.app_ids:
        raise Refused(404, "NotFound", "This relay does not serve that app id.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    said: list[tuple[Role, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object")
        asked = message.get("role")
        role = _ROLES.get(asked) if isinstance(asked, str) else None
        if role is None:
            raise invalid(f"{where}.role must be system, user or assistant")
        said.append((role, _text(message, where)))
    role, prompt = said[-1]
    if role != "user":
        raise invalid("The last message must be the user's, with some text.")
    return check_prompt(ChatTurn(model, name, tuple(said[:-1]), prompt, chat_id), host.max_prompt)


class UIStream:
    """The handlers of the UI message stream, over the relay ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/chat/{id}/stream", self.resume)
        for path in ("/api/chat", "/api/chat/{id}/stream"):
            app.router.add_route("OPTIONS", path, preflight(self.host))

    async def resume(self, request: web.Request) -> web.Response:
        """``resumeStream()``: nothing is kept to replay, which the transport reads as 204."""
        cors = self.host._cors(request)
        try:
            await user(self.host, request)
        except Refused as refused:
            return _refusal(refused, str(uuid.uuid4()), cors)
        return web.Response(status=204, headers=cors)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        host = self.host
        request_id = str(uuid.uuid4())
        cors = host._cors(request)
        try:
            name = await user(host, request)
            await host._spend(name)
            turn = parse(await read_json(host, request), name, host)
            store = host.sessions.store
            try:
                how = await plan(store, turn)
            except TyqwError as exc:
                status, error = upstream_error(exc, request_id)
                raise Refused(status, error["code"], error["message"]) from None
        except Refused as refused:
            refusing = _refusal(refused, request_id, cors)
            return await hang_up(request, refusing) if refused.status == 408 else refusing
        answer = _Answer(turn, how, request_id, cors)
        async with host.sessions.use(turn.app_id, turn.user, how.session_id, how.key) as session:
            upstream = session.stream(turn.prompt, **turn_options(host, how))
            work = answer.stream(request, upstream, store)
            return await unless_gone(request, work, answer.writing, host.send_timeout)


class _Answer:
    """One assistant message, as UI message stream parts."""

    def __init__(self, turn: ChatTurn, how: Plan, request_id: str, cors: dict[str, str]) -> None:
        self.turn = turn
        self.how = how
        self.request_id = request_id
        self.cors = cors
        self.writing = Writing()
        self.open: str | None = None  # the part being streamed: "reasoning" or "text"
        self.count = 0  # parts opened so far, for their ids
        self.head = b""

    def _switch(self, kind: str | None, out: list[bytes]) -> None:
        if self.open == kind:
            return
        if self.open is not None:
            out.append(_chunk({"type": f"{self.open}-end", "id": f"{self.open[0]}{self.count}"}))
        self.open = kind
        if kind is not None:
            self.count += 1
            part_id = f"{kind[0]}{self.count}"
            out.append(_chunk({"type": f"{kind}-start", "id": part_id}))
            # Every delta of this part is this head, the delta's JSON string, "}".
            self.head = f'data: {{"type":"{kind}-delta","id":"{part_id}","delta":'.encode()

    async def stream(
        self, request: web.Request, upstream: MessageStream, store: Any
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={**_HEADERS, "x-request-id": self.request_id, **self.cors}
        )
        self.writing.since = time.monotonic()
        await response.prepare(request)
        self.writing.since = None
        start = {
            "type": "start",
            "messageId": f"msg-{self.request_id}",
            "messageMetadata": {"conversation": self.how.key, "app_id": self.turn.app_id},
        }
        await self.writing.send(response, _chunk(start) + _chunk({"type": "start-step"}))
        reading = Reading()
        session_id: str | None = None
        failure: str | None = None
        async with upstream:
            try:
                async for message in upstream:
                    session_id = message.session_id or session_id
                    out: list[bytes] = []
                    for kind, value in reading.read(message):
                        if kind == "workflow":
                            data = workflow_data(value)
                            node = data["node_id"] or f"node{self.count}"
                            part = {"type": "data-workflow", "id": node, "data": data}
                            out.append(_chunk(part))
                            continue
                        self._switch(kind, out)
                        out.append(self.head + dumps(value).encode() + b"}\n\n")
                    # The parts of one upstream read go out together (see Writing).
                    if self.writing.keep(b"".join(out), upstream):
                        await self.writing.send(response)
            except NotCurrent:
                failure = (
                    "Another request continued this conversation at the same time; send it again."
                )
            except TyqwError as exc:
                failure = upstream_error(exc, self.request_id)[1]["message"]
            reply = upstream.reply
        out = []
        held = reading.rest()
        if held:
            self._switch("text", out)
            out.append(_chunk({"type": "text-delta", "id": f"t{self.count}", "delta": held}))
        self._switch(None, out)
        for citation in reply.citations if failure is None else ():
            document: dict[str, Any] = {
                "type": "source-document",
                "sourceId": citation.marker,
                "mediaType": "text/plain",
                "title": citation.title or citation.doc_name or citation.marker,
            }
            if citation.doc_name:
                document["filename"] = citation.doc_name
            meta = {"doc_id": citation.doc_id, "excerpt": citation.excerpt}
            document["providerMetadata"] = {"tyqw": {k: v for k, v in meta.items() if v}}
            out.append(_chunk(document))
        if failure is None and session_id is None:
            failure = "The relay is stopping."
        if failure is not None:
            out.append(_chunk({"type": "error", "errorText": failure}))
        elif session_id is not None:
            await advance(store, self.turn, self.how, session_id, "".join(reading.shown))
        read, wrote = token_counts(reply)
        metadata = {
            "conversation": self.how.key,
            "session_id": session_id,
            "request_id": reply.request_id,
            "usage": {"input_tokens": read, "output_tokens": wrote},
        }
        out.append(_chunk({"type": "finish-step"}))
        out.append(
            _chunk(
                {
                    "type": "finish",
                    "finishReason": "stop" if failure is None else "error",
                    "messageMetadata": metadata,
                }
            )
        )
        out.append(_DONE)
        await self.writing.send(response, b"".join(out), last=True)
        return response
