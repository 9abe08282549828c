"""The OpenAI Chat Completions dialect: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A client's base URL is the relay's root plus ``/v1``; its API key is the user's relay
token. Each served app id, each served Qwen model and each alias of one is a model.

An app's request becomes one turn (see ``_dialect``: the conversation it continues, or a
new one seeded with the history). A model's request is the service's own generation
request, sent through the relay's forwarder as the native generation endpoint sends
one: the client's messages (system, assistant tool calls and tool results included)
are the history, its ``tools`` and sampling knobs the parameters. The relay keeps no
transcript of a model chat: the model keeps nothing between requests and the client
resends everything each turn, so a stored copy would hold the users' text twice and
continue nothing. The relay never runs a tool: the model's calls go to the client as
``delta.tool_calls``, and the client sends their results back as ``tool`` messages.

The answer is a ``chat.completion`` or, with ``"stream": true``, ``chat.completion.chunk``
events and ``data: [DONE]``. Thoughts and reasoning come as ``reasoning_content``; citation
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
from .._models import Reply
from .._protocol import tool_call_fragments
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
from ._request import GEN_PARAMETERS, Refused, invalid, parse_generation
from ._responses import json_response, upstream_error
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


def _refusal(refused: Refused, request_id: str, cors: dict[str, str]) -> web.Response:
    body = error_json(refused.status, refused.code, refused.message)
    return json_response(refused.status, body, {**cors, **refused.headers}, request_id)


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
                    f"{where}.content has a {part.get('type')!r} part; the relay takes "
                    "text only here"
                )
        return "".join(texts)
    raise invalid(f"{where}.content must be a string or a list of parts")


def conversation_header(request: web.Request) -> str | None:
    """The conversation a client names with ``X-Tyqw-Conversation``, if it does."""
    key = request.headers.get(CONVERSATION_HEADER)
    return None if key is None else check_key(key, CONVERSATION_HEADER)


def served(host: Host) -> list[tuple[str, str]]:
    """Every model a client may name, with its kind: the app ids, the Qwen models, then
    the aliases (each of its target's kind)."""
    kinds = dict.fromkeys(host.app_ids, "bailian-app")
    kinds.update((model, "bailian-model") for model in host.models)
    listed = list(kinds.items())
    listed.extend((alias, kinds[target]) for alias, target in host.aliases.items())
    return listed


def asked_model(body: dict[str, Any], host: Host) -> str:
    """The request's ``model``, as the client named it: one the relay serves."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required: one of the ids GET /v1/models lists")
    if model not in host.app_ids and model not in host.models and model not in host.aliases:
        raise Refused(
            404,
            "model_not_found",
            f"The model {model!r} does not exist on this relay: GET /v1/models lists them.",
        )
    return model


def is_model(body: dict[str, Any], host: Host) -> bool:
    """Whether the request names a served Qwen model (or an alias of one), not an app."""
    model = asked_model(body, host)
    return host.aliases.get(model, model) in host.models


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return body.get("stream") is True, include_usage


# OpenAI's request fields a model takes, by their name in the service's ``parameters``.
# Anything else (``user``, ``metadata``, ``logprobs`` ...) is ignored, as OpenAI-compatible
# servers do with fields they have no use for.
_MODEL_KNOBS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "response_format": "response_format",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    # Qwen's own, which OpenAI clients send as extra body fields.
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "enable_thinking": "enable_thinking",
    "thinking_budget": "thinking_budget",
    "enable_search": "enable_search",
    "search_options": "search_options",
}
assert set(_MODEL_KNOBS.values()) <= GEN_PARAMETERS


def parse_model(body: dict[str, Any], host: Host) -> tuple[dict[str, Any], bool, bool, str]:
    """A model's generation request (checked as the native generation endpoint checks
    one), whether to stream, whether to report usage, and the model asked for."""
    model = asked_model(body, host)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    if body.get("n", 1) not in (1, None):
        raise invalid("n must be 1: the relay gives one answer per request")
    stream, include_usage = _streaming(body)
    parameters: dict[str, Any] = {}
    for name, native in _MODEL_KNOBS.items():
        if body.get(name) is not None:
            parameters[native] = body[name]
    if parameters.get("tool_choice") == "required":
        raise invalid(
            "tool_choice 'required' has no equivalent on a Qwen model: send 'auto', "
            "'none' or {'type': 'function', 'function': {'name': ...}}"
        )
    # Streamed increments whatever the client asked: the relay reads one way.
    parameters["result_format"] = "message"
    parameters["incremental_output"] = True
    generation = {
        "model": host.aliases.get(model, model),
        "input": {
            "messages": [_model_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
        },
        "parameters": parameters,
    }
    try:
        checked = parse_generation(
            dumps(generation).encode(),
            models=host.models,
            max_prompt=host.max_prompt,
            max_messages=host.max_messages,
        )
    except Refused as refused:
        # The checks name the service's fields; the client sent OpenAI's.
        told = refused.message.replace("input.messages", "messages")
        raise Refused(refused.status, refused.code, told) from None
    return checked, stream, include_usage, model


def _model_message(message: object, where: str) -> dict[str, Any]:
    """One OpenAI message as the service takes it: ``developer`` as ``system``, an
    assistant's ``tool_calls`` and a ``tool`` message's ``tool_call_id`` kept, the
    echoed reasoning dropped (the model has no use for it)."""
    if not isinstance(message, dict):
        raise invalid(f"{where} must be an object")
    role = message.get("role")
    content = _text(message.get("content"), where)
    if role in ("system", "developer"):
        return {"role": "system", "content": content}
    if role == "user":
        return {"role": "user", "content": content}
    if role == "assistant":
        said: dict[str, Any] = {"role": "assistant", "content": content}
        calls = message.get("tool_calls")
        if calls:
            said["tool_calls"] = _calls(calls, where)
        return said
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}.tool_call_id must name the tool call this answers")
        return {"role": "tool", "content": content, "tool_call_id": call_id}
    raise invalid(
        f"{where}.role {role!r} is not one a model takes (system, developer, user, "
        "assistant, tool)"
    )


def _calls(calls: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls must be a list")
    out = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise invalid(
                f"{where}.tool_calls[{index}] must be {{id, type: 'function', "
                "function: {name, arguments}}"
            )
        out.append(
            {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    return out


def parse(
    body: dict[str, Any], name: str, host: Host, key: str | None = None
) -> tuple[ChatTurn, bool, bool, str]:
    """The turn, whether to stream, whether to report usage, and the model asked for."""
    model = asked_model(body, host)
    app_id = host.aliases.get(model, model)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    if body.get("n", 1) not in (1, None):
        raise invalid("n must be 1: a Bailian app gives one answer per turn")
    stream, include_usage = _streaming(body)
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
    turn = ChatTurn(app_id, name, tuple(said[:-1]), prompt, key, resume=True)
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
        data = [_model(name, kind) for name, kind in served(self.host)]
        return json_response(200, {"object": "list", "data": data}, cors, request_id)

    async def model(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        cors = self.host._cors(request)
        try:
            await user(self.host, request)
            model = request.match_info["model"]
            kind = dict(served(self.host)).get(model)
            if kind is None:
                raise Refused(404, "model_not_found", f"The model {model!r} does not exist.")
        except Refused as refused:
            return _refusal(refused, request_id, cors)
        return json_response(200, _model(model, kind), cors, request_id)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        host = self.host
        request_id = str(uuid.uuid4())
        cors = host._cors(request)
        try:
            name = await user(host, request)
            await host._spend(name)
            key = conversation_header(request)
            body = await read_json(host, request)
            if is_model(body, host):
                generation, stream, include_usage, model = parse_model(body, host)
            else:
                generation = None
                turn, stream, include_usage, model = parse(body, name, host, key)
        except Refused as refused:
            answer = _refusal(refused, request_id, cors)
            return await hang_up(request, answer) if refused.status == 408 else answer
        if generation is not None:
            spoken = _ModelAnswer(model, request_id, include_usage, cors)
            # The native generation endpoint's path: one forwarded request.
            upstream = host.sessions.forwarder()._forward(generation, stream=True)
            work = spoken.stream(request, upstream) if stream else spoken.whole(upstream)
            return await unless_gone(request, work, spoken.writing, host.send_timeout)
        store = host.sessions.store
        try:
            how = await plan(store, turn)
        except TyqwError as exc:
            status, error = upstream_error(exc, request_id)
            return _refusal(Refused(status, error["code"], error["message"]), request_id, cors)
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


def _model(name: str, kind: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": kind}


_CONTENT = b'{"content":'
_REASONING = b'{"reasoning_content":'


class _Chunks:
    """The wire of one completion's answer: its chunks, their writing, its end."""

    def __init__(
        self, model: str, request_id: str, include_usage: bool, cors: dict[str, str]
    ) -> None:
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

    def said(self, field: bytes, text: str) -> bytes:
        """``chunk({field: text})``, byte for byte, without building and encoding a dict:
        most chunks are one piece of text, and encoding a string alone is cheaper."""
        return b"".join((self.prefix, field, dumps(text).encode(), b"}", self.suffix))

    def _whole_chunk(self, body: dict[str, Any]) -> bytes:
        return b"data: " + dumps(body).encode() + b"\n\n"

    def _end(self, finish_reason: str, usage: dict[str, Any]) -> list[bytes]:
        """The last chunks: the finish, the usage if asked for, ``[DONE]``."""
        out = [self.prefix + b'{},"finish_reason":' + dumps(finish_reason).encode()]
        out[0] += b',"logprobs":null}]}\n\n'
        if self.include_usage:
            chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            out.append(self._whole_chunk(chunk))
        out.append(b"data: [DONE]\n\n")
        return out

    def _whole(
        self, said: dict[str, Any], finish_reason: str, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": said, "finish_reason": finish_reason, "logprobs": None}
            ],
            "usage": usage,
        }

    def _failed(self, exc: TyqwError) -> tuple[int, dict[str, Any], str]:
        status, error = upstream_error(exc, self.request_id)
        return status, error_json(status, error["code"], error["message"]), error["request_id"]

    async def _start(self, request: web.Request, request_id: str | None) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={**_SSE_HEADERS, "x-request-id": request_id or self.request_id, **self.cors},
        )
        self.writing.since = time.monotonic()
        await response.prepare(request)
        self.writing.since = None
        return response

    async def _fail(self, response: web.StreamResponse, status: int, code: str, text: str) -> None:
        # openai-python and openai-node raise APIError on a chunk with an error; the
        # stream then ends without [DONE], as OpenAI ends a failed stream.
        error = self._whole_chunk(error_json(status, code, text))
        await self.writing.send(response, error, last=True)

    def _stopping(self) -> web.Response:
        """The relay is stopping: the turn ended before any event."""
        body = error_json(503, "ServiceUnavailable", "The relay is stopping.")
        return json_response(503, body, self.cors, self.request_id)


class _Answer(_Chunks):
    """An app's answer, streamed or whole; the conversation moved on after it."""

    def __init__(
        self,
        turn: ChatTurn,
        how: Plan,
        model: str,
        request_id: str,
        include_usage: bool,
        cors: dict[str, str],
    ) -> None:
        super().__init__(model, request_id, include_usage, cors)
        self.turn = turn
        self.how = how

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
                            out.append(self.said(_CONTENT, value))
                        elif kind == "reasoning":
                            out.append(self.said(_REASONING, value))
                    if self.writing.keep(b"".join(out), upstream):
                        await self.writing.send(response)
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
                    return json_response(status, body, self.cors, error["request_id"])
                await self._fail(response, status, error["code"], error["message"])
                return response
            reply = upstream.reply
        if response is None:
            return self._stopping()
        held = reading.rest()
        listed = sources(reply.citations)
        reading.shown.append(listed)
        tail = held + listed
        if session_id is not None:
            await advance(store, self.turn, self.how, session_id, "".join(reading.shown))
        out = [self.chunk({"content": tail})] if tail else []
        out.extend(self._end("stop", _usage(reply)))
        await self.writing.send(response, b"".join(out), last=True)
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
                return json_response(status, body, self.cors, error["request_id"])
            reply = upstream.reply
        if session_id is None:
            return self._stopping()
        reading.rest()
        reading.shown.append(sources(reply.citations))
        content = "".join(reading.shown)
        await advance(store, self.turn, self.how, session_id, content)
        said: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            said["reasoning_content"] = "".join(reasoning)
        return json_response(200, self._whole(said, "stop", _usage(reply)), self.cors, request_id)


def _usage(reply: Any) -> dict[str, Any]:
    read, wrote = token_counts(reply)
    return {"prompt_tokens": read, "completion_tokens": wrote, "total_tokens": read + wrote}


class _ModelAnswer(_Chunks):
    """A model's answer, streamed or whole: text, reasoning and tool calls as they come."""

    async def stream(self, request: web.Request, upstream: MessageStream) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        opened: set[int] = set()  # the tool calls whose first delta went out
        async with upstream:
            try:
                async for message in upstream:
                    out = []
                    if response is None:
                        response = await self._start(request, message.request_id)
                        out.append(self.chunk({"role": "assistant", "content": ""}))
                    if message.reasoning:
                        out.append(self.said(_REASONING, message.reasoning))
                    if message.delta:
                        out.append(self.said(_CONTENT, message.delta))
                    out.extend(self._calls(message.raw, opened))
                    if self.writing.keep(b"".join(out), upstream):
                        await self.writing.send(response)
            except TyqwError as exc:
                status, body, request_id = self._failed(exc)
                if response is None:
                    return json_response(status, body, self.cors, request_id)
                await self._fail(response, status, body["error"]["code"], body["error"]["message"])
                return response
            reply = upstream.reply
        if response is None:
            return self._stopping()
        await self.writing.send(
            response, b"".join(self._end(_finish(reply), _model_usage(reply))), last=True
        )
        return response

    def _calls(self, raw: dict[str, Any], opened: set[int]) -> list[bytes]:
        """The tool call fragments of one event as OpenAI deltas: one call per chunk, its
        id, type and name on its first (NextChat reads only ``tool_calls[0]`` and opens a
        call on each id it sees), its arguments in pieces after."""
        choices = raw.get("output", {}).get("choices")
        message = choices[0].get("message") if choices else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not calls:
            return []
        out = []
        for index, call_id, name, arguments in tool_call_fragments(calls):
            delta: dict[str, Any]
            if index not in opened:
                opened.add(index)
                function = {"name": name, "arguments": arguments}
                delta = {"index": index, "id": call_id, "type": "function", "function": function}
            elif arguments:
                delta = {"index": index, "function": {"arguments": arguments}}
            else:
                continue
            out.append(self.chunk({"tool_calls": [delta]}))
        return out

    async def whole(self, upstream: MessageStream) -> web.Response:
        request_id = self.request_id
        async with upstream:
            try:
                async for message in upstream:
                    request_id = message.request_id or request_id
            except TyqwError as exc:
                status, body, failed_id = self._failed(exc)
                return json_response(status, body, self.cors, failed_id)
            reply = upstream.reply
        if reply.finish_reason is None:
            return self._stopping()
        said: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.reasoning:
            said["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            said["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in reply.tool_calls
            ]
        body = self._whole(said, _finish(reply), _model_usage(reply))
        return json_response(200, body, self.cors, request_id)


def _finish(reply: Reply) -> str:
    """OpenAI's finish_reason of a model's reply: ``tool_calls`` whenever it made calls
    (the service ends a forced call with ``stop``), else its own when OpenAI has it."""
    if reply.tool_calls:
        return "tool_calls"
    finish = reply.finish_reason
    return finish if finish in ("length", "content_filter") else "stop"


def _model_usage(reply: Reply) -> dict[str, Any]:
    """A model's usage, the service's running total at the end of the reply."""
    usage = reply.usage if isinstance(reply.usage, dict) else {}
    read, wrote = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    counted: dict[str, Any] = {
        "prompt_tokens": read,
        "completion_tokens": wrote,
        "total_tokens": read + wrote,
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and _count(details.get("reasoning_tokens")):
        counted["completion_tokens_details"] = {
            "reasoning_tokens": _count(details.get("reasoning_tokens"))
        }
    return counted


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
