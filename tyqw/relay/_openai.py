"""The OpenAI Chat Completions dialect: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A client's base URL is the relay's root plus ``/v1``; its API key is the user's relay
token. Each served app id is a model. The request's messages become one turn (see
``_dialect``: the conversation it continues, or a new one seeded with the history);
the answer is a ``chat.completion`` or, with ``"stream": true``, ``chat.completion.chunk``
events and ``data: [DONE]``. An app's thoughts come as ``reasoning_content``; citation
markers as plain ``[n]``, with the cited documents listed under the reply. Errors have
OpenAI's shape: an HTTP status with ``{"error": {...}}`` before the stream, a
``data: {"error": {...}}`` event inside it, so OpenAI's SDKs raise their own errors.
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
    sources,
    token_counts,
    turn_options,
    user,
)
from ._gone import Writing, hang_up, unless_gone
from ._request import Refused, invalid
from ._responses import upstream_error
from ._users import NotCurrent

__all__ = ["CONVERSATION_HEADER", "OpenAI"]

#: Names the conversation a request continues (the relay answers with it too).
CONVERSATION_HEADER = "X-Tyqw-Conversation"

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}
_STARTED = int(time.time())
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}


def error_json(status: int, code: str, message: str) -> dict[str, Any]:
    """OpenAI's error object, with DashScope's code as its ``code``."""
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _json(
    status: int, body: dict[str, Any], request_id: str, headers: dict[str, str]
) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "x-request-id": request_id,
            **headers,
        },
    )


def _refusal(refused: Refused, request_id: str, cors: dict[str, str]) -> web.Response:
    body = error_json(refused.status, refused.code, refused.message)
    return _json(refused.status, body, request_id, {**cors, **refused.headers})


def _moved_on() -> Refused:
    return Refused(
        409,
        "Conflict",
        "Another request continued this conversation at the same time; send it again.",
    )


def _text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise invalid(f"{where}.content must be a string or a list of parts")
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") in ("text", None):
                raise invalid(f"{where}.content has a text part without text")
            else:
                raise invalid(
                    f"{where}.content has a {part.get('type')!r} part; a Bailian app "
                    "takes text only here"
                )
        return "".join(texts)
    raise invalid(f"{where}.content must be a string or a list of parts")


def conversation_header(request: web.Request) -> str | None:
    """The conversation a client names with ``X-Tyqw-Conversation``, if it does."""
    key = request.headers.get(CONVERSATION_HEADER)
    return None if key is None else check_key(key, CONVERSATION_HEADER)


def parse(
    body: dict[str, Any], name: str, host: Host, key: str | None = None
) -> tuple[ChatTurn, bool, bool, str]:
    """The turn, whether to stream, whether to report usage, and the model asked for."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required: one of the ids GET /v1/models lists")
    if model not in host.app_ids:
        raise Refused(
            404,
            "model_not_found",
            f"The model {model!r} does not exist on this relay: GET /v1/models lists them.",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    if body.get("n", 1) not in (1, None):
        raise invalid("n must be 1: a Bailian app gives one answer per turn")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    said: list[tuple[Role, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object")
        asked = message.get("role")
        role = _ROLES.get(asked) if isinstance(asked, str) else None
        if role is None:
            raise invalid(
                f"{where}.role {asked!r} is not one a Bailian app takes "
                "(system, developer, user, assistant)"
            )
        said.append((role, _text(message.get("content"), where)))
    role, prompt = said[-1]
    if role != "user":
        raise invalid("The last message must be the user's, with some text.")
    turn = ChatTurn(model, name, tuple(said[:-1]), prompt, key, resume=True)
    return check_prompt(turn, host.max_prompt), stream, include_usage, model


class OpenAI:
    """The handlers of the OpenAI dialect, over the relay ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        for path in ("/v1/chat/completions", "/v1/models", "/v1/models/{model}"):
            app.router.add_route("OPTIONS", path, preflight(self.host))

    async def models(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        cors = self.host._cors(request)
        try:
            await user(self.host, request)
        except Refused as refused:
            return _refusal(refused, request_id, cors)
        data = [_model(app_id) for app_id in self.host.app_ids]
        return _json(200, {"object": "list", "data": data}, request_id, cors)

    async def model(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        cors = self.host._cors(request)
        try:
            await user(self.host, request)
            model = request.match_info["model"]
            if model not in self.host.app_ids:
                raise Refused(404, "model_not_found", f"The model {model!r} does not exist.")
        except Refused as refused:
            return _refusal(refused, request_id, cors)
        return _json(200, _model(model), request_id, cors)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        host = self.host
        request_id = str(uuid.uuid4())
        cors = host._cors(request)
        try:
            name = await user(host, request)
            await host._spend(name)
            key = conversation_header(request)
            body = await read_json(host, request)
            turn, stream, include_usage, model = parse(body, name, host, key)
            store = host.sessions.store
            try:
                how = await plan(store, turn)
            except TyqwError as exc:
                status, error = upstream_error(exc, request_id)
                raise Refused(status, error["code"], error["message"]) from None
        except Refused as refused:
            answer = _refusal(refused, request_id, cors)
            return await hang_up(request, answer) if refused.status == 408 else answer
        reply = _Answer(turn, how, model, request_id, include_usage, _named(cors, how.key))
        async with host.sessions.use(turn.app_id, turn.user, how.session_id, how.key) as session:
            upstream = session.stream(turn.prompt, **turn_options(host, how))
            if stream:
                work = reply.stream(request, upstream, store)
            else:
                work = reply.whole(upstream, store)
            return await unless_gone(request, work, reply.writing, host.send_timeout)


def _named(cors: dict[str, str], key: str) -> dict[str, str]:
    """The answer's headers: the conversation's key, readable by a page too."""
    headers = {**cors, CONVERSATION_HEADER: key}
    if "Access-Control-Expose-Headers" in cors:
        exposed = cors["Access-Control-Expose-Headers"]
        headers["Access-Control-Expose-Headers"] = f"{exposed}, {CONVERSATION_HEADER}"
    return headers


def _model(app_id: str) -> dict[str, Any]:
    return {"id": app_id, "object": "model", "created": _STARTED, "owned_by": "bailian-app"}


class _Answer:
    """One completion's answer, streamed or whole."""

    def __init__(
        self,
        turn: ChatTurn,
        how: Plan,
        model: str,
        request_id: str,
        include_usage: bool,
        cors: dict[str, str],
    ) -> None:
        self.turn = turn
        self.how = how
        self.model = model
        self.request_id = request_id
        self.include_usage = include_usage
        self.cors = cors
        self.writing = Writing()
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        # Every chunk is this prefix, a delta, this suffix: only the delta is encoded.
        head = dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created})[
            :-1
        ]
        self.prefix = (
            f'data: {head},"model":{dumps(model)},"choices":[{{"index":0,"delta":'
        ).encode()
        self.suffix = b',"finish_reason":null,"logprobs":null}]}\n\n'

    def chunk(self, delta: dict[str, Any]) -> bytes:
        return self.prefix + dumps(delta).encode() + self.suffix

    def _whole_chunk(self, body: dict[str, Any]) -> bytes:
        return b"data: " + dumps(body).encode() + b"\n\n"

    async def stream(
        self, request: web.Request, upstream: MessageStream, store: Any
    ) -> web.StreamResponse:
        reading = Reading()
        response: web.StreamResponse | None = None
        session_id: str | None = None
        async with upstream:
            try:
                async for message in upstream:
                    out = []
                    if response is None:
                        response = await self._start(request, message.request_id)
                        out.append(self.chunk({"role": "assistant", "content": ""}))
                    session_id = message.session_id or session_id
                    for kind, value in reading.read(message):
                        if kind == "text":
                            out.append(self.chunk({"content": value}))
                        elif kind == "reasoning":
                            out.append(self.chunk({"reasoning_content": value}))
                    if out:
                        await self._send(response, b"".join(out))
            except NotCurrent:
                refused = _moved_on()
                if response is None:
                    return _refusal(refused, self.request_id, self.cors)
                await self._fail(response, 409, refused.code, refused.message)
                return response
            except TyqwError as exc:
                status, error = upstream_error(exc, self.request_id)
                if response is None:
                    body = error_json(status, error["code"], error["message"])
                    return _json(status, body, error["request_id"], self.cors)
                await self._fail(response, status, error["code"], error["message"])
                return response
            reply = upstream.reply
        if response is None:  # the relay is stopping: the turn ended before any event
            body = error_json(503, "ServiceUnavailable", "The relay is stopping.")
            return _json(503, body, self.request_id, self.cors)
        held = reading.rest()
        listed = sources(reply.citations)
        reading.shown.append(listed)
        tail = held + listed
        if session_id is not None:
            await advance(store, self.turn, self.how, session_id, "".join(reading.shown))
        out = [self.chunk({"content": tail})] if tail else []
        out.append(self.prefix + b'{},"finish_reason":"stop","logprobs":null}]}\n\n')
        if self.include_usage:
            usage = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": _usage(reply),
            }
            out.append(self._whole_chunk(usage))
        out.append(b"data: [DONE]\n\n")
        await self._send(response, b"".join(out), last=True)
        return response

    async def whole(self, upstream: MessageStream, store: Any) -> web.Response:
        reading = Reading()
        reasoning: list[str] = []
        session_id: str | None = None
        request_id = self.request_id
        async with upstream:
            try:
                async for message in upstream:
                    session_id = message.session_id or session_id
                    request_id = message.request_id or request_id
                    for kind, value in reading.read(message):
                        if kind == "reasoning":
                            reasoning.append(value)
            except NotCurrent:
                return _refusal(_moved_on(), self.request_id, self.cors)
            except TyqwError as exc:
                status, error = upstream_error(exc, self.request_id)
                body = error_json(status, error["code"], error["message"])
                return _json(status, body, error["request_id"], self.cors)
            reply = upstream.reply
        if session_id is None:
            body = error_json(503, "ServiceUnavailable", "The relay is stopping.")
            return _json(503, body, self.request_id, self.cors)
        reading.rest()
        reading.shown.append(sources(reply.citations))
        content = "".join(reading.shown)
        await advance(store, self.turn, self.how, session_id, content)
        said: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            said["reasoning_content"] = "".join(reasoning)
        body = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": said, "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(reply),
        }
        return _json(200, body, request_id, self.cors)

    async def _start(self, request: web.Request, request_id: str | None) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={**_SSE_HEADERS, "x-request-id": request_id or self.request_id, **self.cors},
        )
        self.writing.since = time.monotonic()
        await response.prepare(request)
        self.writing.since = None
        return response

    async def _send(self, response: web.StreamResponse, data: bytes, last: bool = False) -> None:
        # Watched by unless_gone(): a client that stops reading blocks this write.
        self.writing.since = time.monotonic()
        await response.write(data)
        if last:
            await response.write_eof()
        self.writing.since = None

    async def _fail(self, response: web.StreamResponse, status: int, code: str, text: str) -> None:
        # openai-python and openai-node raise APIError on a chunk with an error; the
        # stream then ends without [DONE], as OpenAI ends a failed stream.
        await self._send(response, self._whole_chunk(error_json(status, code, text)), last=True)


def _usage(reply: Any) -> dict[str, Any]:
    read, wrote = token_counts(reply)
    return {"prompt_tokens": read, "completion_tokens": wrote, "total_tokens": read + wrote}
