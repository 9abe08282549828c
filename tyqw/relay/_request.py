"""What a client may ask the relay for: the request body, checked field by field.

The relay spends the server's key, so a request may carry only what a chat needs: the
prompt (with a size cap), ``session_id``, ``messages`` (a conversation's context: a
bounded number of system, user and assistant texts, each within the prompt's cap; a
tyqw ``Session`` sends them when it judges that the service forgot its conversation),
``has_thoughts``, ``incremental_output`` and the ``biz_params`` keys the operator allows.
Everything else is refused with a message that names the field, rather than dropped: a
client that sends ``rag_options`` must learn that it did not reach the app.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .._json import json_problem

__all__ = ["GEN_PARAMETERS", "Refused", "TurnRequest", "invalid", "parse_generation", "parse_turn"]

_TOP_LEVEL = frozenset({"input", "parameters", "model", "debug"})
_INPUT = ("prompt", "session_id", "messages", "biz_params")
_ROLES = ("system", "user", "assistant")
_PARAMETERS = ("has_thoughts", "incremental_output")
_ACCEPTED = ", ".join([*(f"input.{k}" for k in _INPUT), *(f"parameters.{k}" for k in _PARAMETERS)])


class Refused(Exception):
    """A request the relay answers itself, with a DashScope error body.

    ``inband`` errors are answered on streaming requests the way the service answers a
    bad request there: HTTP 200 and one ``event:error`` frame. The others (no or wrong
    token, an app the relay does not serve, the rate limit) are plain HTTP errors, as
    a gateway answers them.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        inband: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inband = inband
        self.headers = headers or {}


def invalid(message: str) -> Refused:
    return Refused(400, "InvalidParameter", message, inband=True)


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn as the client asked for it, in ``Session.stream()`` terms."""

    prompt: str
    session_id: str | None
    options: dict[str, Any] = field(default_factory=dict)


def parse_turn(
    raw: bytes, *, max_prompt: int, biz_params: Collection[str], max_messages: int
) -> TurnRequest:
    """Check a completion request body and say what turn it asks for."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("Required body invalid, please check the request body format.") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    _only(body, _TOP_LEVEL, "")
    if not isinstance(body.get("model", ""), str):
        raise invalid("model must be a string (the relay ignores it)")
    if body.get("debug", {}) != {}:
        raise invalid("debug must be empty")
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise invalid("input must be an object with a prompt")
    params = body.get("parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise invalid("parameters must be an object")
    _only(inp, _INPUT, "input.")
    _only(params, _PARAMETERS, "parameters.")
    # The SDK's own check: text it could not send and numbers JSON has no room for
    # (NaN, Infinity, 1e400) are the client's mistake, named, not a 500 or a 502.
    problem = json_problem(body, "")
    if problem is not None:
        raise invalid(problem)

    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid(
            "Required parameter(prompt) missing or invalid, please check the request parameters."
        )
    if len(prompt) > max_prompt:
        raise invalid(f"input.prompt is {len(prompt)} characters; the limit is {max_prompt}")
    session_id = inp.get("session_id")
    if session_id == "":  # what the simulator and the TS class mean by "no conversation yet"
        session_id = None
    if session_id is not None and not isinstance(session_id, str):
        raise invalid("input.session_id must be a string (empty or absent: a new conversation)")

    options: dict[str, Any] = {}
    for key in _PARAMETERS:
        if key in params:
            if not isinstance(params[key], bool):
                raise invalid(f"parameters.{key} must be true or false")
            options[key] = params[key]
    if "biz_params" in inp:
        biz = inp["biz_params"]
        if not isinstance(biz, dict):
            raise invalid("input.biz_params must be an object")
        unknown = sorted(set(biz) - set(biz_params))
        if unknown:
            allowed = ", ".join(sorted(biz_params)) or "none"
            raise invalid(
                f"input.biz_params.{unknown[0]} is not allowed by this relay (allowed: {allowed})"
            )
        options["biz_params"] = biz
    if "messages" in inp:
        options["messages"] = _context(inp["messages"], max_prompt, max_messages)
    return TurnRequest(prompt, session_id, options)


def _context(messages: object, max_prompt: int, max_messages: int) -> list[dict[str, str]]:
    """``input.messages`` of an app's turn, checked: the context the app gets instead of
    the conversation ``session_id`` names (the service's rule when both are given)."""
    if not isinstance(messages, list) or not 1 <= len(messages) <= max_messages:
        raise invalid(f"input.messages must be a list of 1 to {max_messages} messages")
    for index, message in enumerate(messages):
        where = f"input.messages[{index}]"
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in _ROLES
            or not isinstance(message["content"], str)
        ):
            raise invalid(
                f"{where} must be {{'role': ..., 'content': text}} with a role of "
                f"{', '.join(_ROLES)}"
            )
        if len(message["content"]) > max_prompt:
            raise invalid(f"{where}.content is longer than {max_prompt} characters")
    return messages


def _only(obj: dict[str, Any], allowed: Collection[str], where: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        raise invalid(f"unknown field {where}{unknown[0]}: this relay accepts only {_ACCEPTED}")


# -- the generation endpoint (models) ---------------------------------------------------

_GEN_TOP_LEVEL = frozenset({"model", "input", "parameters"})
_GEN_ROLES = frozenset({"system", "user", "assistant", "tool"})
_GEN_MESSAGE = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "partial", "reasoning_content"}
)
#: What a client may set in ``parameters`` of a relayed generation request.
GEN_PARAMETERS = frozenset(
    {
        "result_format",
        "incremental_output",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "max_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "response_format",
        "enable_thinking",
        "thinking_budget",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "enable_search",
        "search_options",
    }
)


def parse_generation(
    raw: bytes, *, models: Collection[str], max_prompt: int, max_messages: int
) -> dict[str, Any]:
    """Check a generation request body (a model in the allow-list, a bounded number of
    bounded messages, known parameters only) and return it to send on as it is."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("Required body invalid, please check the request body format.") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    unknown = [key for key in body if key not in _GEN_TOP_LEVEL]
    if unknown:
        raise invalid(f"unknown field {unknown[0]}: this relay accepts model, input, parameters")
    model = body.get("model")
    if model not in models:
        raise Refused(404, "NotFound", "This relay does not serve that model.")
    inp = body.get("input")
    messages = inp.get("messages") if isinstance(inp, dict) else None
    if not isinstance(inp, dict) or set(inp) != {"messages"} or not isinstance(messages, list):
        raise invalid("input must be an object with messages (and nothing else)")
    if not 1 <= len(messages) <= max_messages:
        raise invalid(f"input.messages must hold 1 to {max_messages} messages")
    for index, message in enumerate(messages):
        where = f"input.messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in _GEN_ROLES:
            roles = ", ".join(sorted(_GEN_ROLES))
            raise invalid(f"{where} must be an object with a role of {roles}")
        extra = [key for key in message if key not in _GEN_MESSAGE]
        if extra:
            raise invalid(f"unknown field {where}.{extra[0]}")
        if len(json.dumps(message.get("content", ""), ensure_ascii=False)) > max_prompt + 2:
            raise invalid(f"{where}.content is longer than {max_prompt} characters")
    params = body.get("parameters")
    if params is None:
        params = body["parameters"] = {}
    if not isinstance(params, dict):
        raise invalid("parameters must be an object")
    unknown = sorted(key for key in params if key not in GEN_PARAMETERS)
    if unknown:
        raise invalid(
            f"parameters.{unknown[0]} is not allowed by this relay "
            f"(allowed: {', '.join(sorted(GEN_PARAMETERS))})"
        )
    problem = json_problem(body, "")
    if problem is not None:
        raise invalid(problem)
    return body
