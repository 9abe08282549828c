"""The text-generation endpoint (models, not apps): its checks, its answer, its payloads.

The service keeps no conversation for a model: every request carries the whole context
as ``input.messages``, and the answer is written from it, so what an earlier message
told the model ("my name is X") is visible in a later answer. :func:`read_generation`
checks a body in the service's words (models protocol reference §A3, §A6);
:func:`compose` decides the answer (text, reasoning for thinking models, deterministic
tool calls for the weather or the time in a city); :func:`stream_payloads` and
:func:`json_payload` write it in the captured shapes (§A4, §A5): ``finish_reason``
``"null"`` until the end, a running ``usage`` on every chunk, reasoning before the
answer, tool-call fragments grouped by ``index`` with ``"id": ""`` on continuations.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .._wire import dumps
from .apps import is_reasoning_model
from .errors import BAD_BODY, Refusal, invalid
from .knowledge import reasoning_text
from .replies import ReplyFunc, is_chinese

_ROLES = ("system", "user", "assistant", "tool")
NO_MESSAGES = 'Either "prompt" or "messages" must exist and cannot both be none'
EMPTY_USER = "Role must be user or assistant and Content length must be greater than 0"
TOOL_WITHOUT_CALL = (
    'messages with role "tool" must be a response to a preceeding message with "tool_calls"'
)
NOT_A_STRING = "input content must be a string."
NO_CONTENT = "The content field is a required field."
THINKING_FORMAT = 'The result_format parameter must be "message" when enable_thinking is true'
THINKING_INCREMENTAL = (
    'The incremental_output parameter must be "true" when enable_thinking is true'
)
THINKING_NOT_STREAM = "parameter.enable_thinking must be set to false for non-streaming calls"
JSON_WORD = (
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
    "'json_object'."
)
JSON_THINKING = "Json mode response is not supported when enable_thinking is true"
TOOL_CHOICE = 'tool_choice is one of the strings that should be ["none", "auto"]'
NO_MODEL = "Model not exist."
URL_ERROR = "url error, please check url!"

_WEATHER = re.compile(r"天气|气温|weather|temperature", re.I)
_TIME = re.compile(r"时间|几点|time\b|clock", re.I)
_CITIES = (
    ("杭州", "Hangzhou"),
    ("上海", "Shanghai"),
    ("北京", "Beijing"),
    ("深圳", "Shenzhen"),
    ("广州", "Guangzhou"),
    ("成都", "Chengdu"),
    ("东京", "Tokyo"),
    ("伦敦", "London"),
    ("巴黎", "Paris"),
    ("纽约", "New York"),
)


def context_too_long(limit: int) -> Refusal:
    """The service's answer to messages past the model's context."""
    return invalid(f"Range of input length should be [1, {limit}]")


@dataclass(slots=True)
class Request:
    """What a valid generation body asks."""

    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any]
    tools: list[dict[str, Any]]


def read_generation(body: Any, *, sse: bool, max_input_tokens: int) -> Request:
    """What ``body`` asks, or the service's refusal of it."""
    if not isinstance(body, dict):
        raise invalid(BAD_BODY)
    model, inp, params = body.get("model"), body.get("input"), body.get("parameters")
    if not isinstance(model, str) or not model:
        raise Refusal(400, "InvalidParameter", NO_MODEL, inband=True)
    if params is None:
        params = {}
    if inp is None and "messages" in body:
        raise invalid(NO_MESSAGES)
    if not isinstance(inp, dict) or not isinstance(params, dict):
        raise invalid(BAD_BODY)
    messages, prompt = inp.get("messages"), inp.get("prompt")
    if messages is None and prompt is None:
        raise invalid(NO_MESSAGES)
    if messages is not None and not isinstance(messages, list):
        raise invalid(BAD_BODY)
    if messages == [] and prompt is None:
        raise invalid("[] is too short")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("Input prompt must be a string.")
    if messages == [] and prompt is not None:
        raise invalid(EMPTY_USER)  # the captured answer to prompt + "messages": []
    messages = list(messages or [])
    if prompt:
        messages.append({"role": "user", "content": prompt})
    _check_messages(messages)
    tools = _check_parameters(params, messages, sse)
    used = sum(len(_text(m.get("content"))) for m in messages)
    if used > max_input_tokens:
        raise context_too_long(max_input_tokens)
    return Request(model, messages, params, tools)


def _check_messages(messages: list[Any]) -> None:
    called = False
    for position, item in enumerate(messages):
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise invalid(BAD_BODY)
        role = item["role"]
        if "content" not in item and not item.get("tool_calls"):
            raise invalid(NO_CONTENT)
        content = item.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise invalid(NOT_A_STRING)
        if role == "system" and position != 0:
            raise invalid("System message must be at the beginning.")
        if role == "tool" and not called:
            raise invalid(TOOL_WITHOUT_CALL)
        if role == "assistant":
            called = bool(item.get("tool_calls"))
        elif role == "user":
            called = False
            if not _text(content).strip():
                raise invalid(EMPTY_USER)
    last = messages[-1]["role"] if messages else None
    if last not in ("user", "tool") and not (last == "assistant" and messages[-1].get("partial")):
        raise invalid(EMPTY_USER)


def _check_parameters(params: dict[str, Any], messages: list[Any], sse: bool) -> list[Any]:
    result_format = params.get("result_format", "text")
    if result_format not in ("text", "message"):
        raise invalid('result_format should be "text" or "message"')
    thinking = params.get("enable_thinking") is True
    incremental = params.get("incremental_output", False)
    if not isinstance(incremental, bool):
        raise invalid("incremental_output must be a boolean")
    if thinking:
        if result_format != "message":
            raise invalid(THINKING_FORMAT)
        if not sse:
            raise invalid(THINKING_NOT_STREAM)
        if not incremental:
            raise invalid(THINKING_INCREMENTAL)
    temperature = params.get("temperature")
    if temperature is not None and not (_number(temperature) and 0 <= temperature < 2):
        raise invalid("Temperature should be in [0.0, 2.0)")
    top_p = params.get("top_p")
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise invalid("Range of top_p should be (0.0, 1.0]")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and not (_int(max_tokens) and 1 <= max_tokens <= 16384):
        raise invalid("Range of max_tokens should be [1, 16384]")
    response_format = params.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        if thinking:
            raise invalid(JSON_THINKING)
        if not any("json" in _text(m.get("content")).lower() for m in messages):
            raise invalid(JSON_WORD)
    tool_choice = params.get("tool_choice")
    if tool_choice is not None and not (
        tool_choice in ("auto", "none") or isinstance(tool_choice, dict)
    ):
        raise invalid(TOOL_CHOICE)
    tools = params.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise invalid("The tool call is not supported.")
    return tools


# -- the answer -----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Generation:
    """The answer to one generation request."""

    request_id: str
    model: str
    text: str
    reasoning: str
    tool_calls: list[dict[str, str]]
    finish: str
    incremental: bool
    message_format: bool
    multimodal: bool
    input_tokens: int
    search: list[dict[str, Any]] | None = None
    session_id: str = field(default="")  # none: what faults may read of any answer


def compose(
    request: Request,
    *,
    request_id: str,
    reply: ReplyFunc,
    reasoning_model: bool | None,
    multimodal: bool = False,
) -> Generation:
    """Decide the answer to ``request``: a tool call when a tool fits the question, an
    answer from the tool results when they came back, else ``reply(prompt, history)``."""
    params = request.parameters
    messages = request.messages
    last = messages[-1]
    prompt, history = _conversation(messages)
    zh = is_chinese(prompt)
    calls: list[dict[str, str]] = []
    if last["role"] == "tool":
        results = [_text(m.get("content")) for m in _tool_results(messages)]
        text = ("工具返回：" if zh else "The tools returned: ") + ("；" if zh else "; ").join(
            results
        )
    else:
        if params.get("tool_choice") != "none":
            calls = _tool_calls(prompt, request.tools, params.get("parallel_tool_calls") is True)
        text = "" if calls else reply(prompt, history)
    thinking = params.get("enable_thinking")
    reasons = (
        thinking
        if isinstance(thinking, bool)
        else (is_reasoning_model(request.model) if reasoning_model is None else reasoning_model)
    )
    reasoning = reasoning_text(prompt, history, zh) if reasons else ""
    budget = params.get("thinking_budget")
    if reasoning and isinstance(budget, int) and budget > 0:
        reasoning = reasoning[:budget]
    finish = "tool_calls" if calls else "stop"
    stop = params.get("stop")
    for word in [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []:
        if isinstance(word, str) and word and word in text:
            text = text[: text.index(word)]
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and len(text) > max_tokens:
        text, finish = text[:max_tokens], "length"
    search = None
    if params.get("enable_search") is True:
        search = [{"icon": "", "index": 1, "site_name": "tyqw", "title": prompt[:40], "url": ""}]
    return Generation(
        request_id=request_id,
        model=request.model,
        text=text,
        reasoning=reasoning,
        tool_calls=calls,
        finish=finish,
        incremental=params.get("incremental_output") is True,
        message_format=params.get("result_format") == "message" or multimodal,
        multimodal=multimodal,
        input_tokens=sum(len(_text(m.get("content"))) for m in messages),
        search=search,
    )


def _conversation(messages: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """The last user prompt and the ``(user, assistant)`` turns before it."""
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    prompt = ""
    for item in messages:
        role, content = item["role"], _text(item.get("content"))
        if role == "user":
            if pending is not None:
                turns.append((pending, ""))
            pending = prompt = content
        elif role == "assistant" and content:
            turns.append((pending or "", content))
            pending = None
    return prompt, turns


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for item in reversed(messages):
        if item["role"] != "tool":
            break
        results.insert(0, item)
    return results


def _tool_calls(prompt: str, tools: list[dict[str, Any]], parallel: bool) -> list[dict[str, str]]:
    """The calls a prompt about the weather or the time in a city leads to, if a tool fits."""
    want = "weather" if _WEATHER.search(prompt) else "time" if _TIME.search(prompt) else None
    if want is None:
        return []
    tool = next((t["function"] for t in tools if want in t["function"]["name"].lower()), None)
    if tool is None:
        return []
    found = sorted(
        (position, zh if zh in prompt else en)
        for zh, en in _CITIES
        for position in [prompt.find(zh) if zh in prompt else prompt.lower().find(en.lower())]
        if position >= 0
    )
    cities = [city for _, city in found][: None if parallel else 1]
    properties = (tool.get("parameters") or {}).get("properties") or {}
    key = next((k for k in ("location", "city") if k in properties), None)
    key = key or next(iter(properties), "location")
    return [
        {
            "id": f"call_{request_hash(prompt, index)}",
            "name": tool["name"],
            "arguments": json.dumps({key: city}, ensure_ascii=False),
        }
        for index, city in enumerate(cities)
    ]


def request_hash(prompt: str, index: int) -> str:
    """A deterministic call id: the same prompt calls with the same ids."""
    return hashlib.sha256(f"{index}:{prompt}".encode()).hexdigest()[:22]


# -- payloads -------------------------------------------------------------------------


def _usage(answer: Generation, reasoned: int, wrote: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "total_tokens": answer.input_tokens + reasoned + wrote,
        "output_tokens": reasoned + wrote,
        "input_tokens": answer.input_tokens,
    }
    if answer.reasoning:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoned}
    return usage


def _chunk(
    answer: Generation,
    content: str,
    reasoning: str | None,
    calls: list[dict[str, Any]] | None,
    finish: str,
    usage: dict[str, Any],
    first: bool = False,
) -> dict[str, Any]:
    if not answer.message_format:
        output: dict[str, Any] = {"finish_reason": finish, "text": content}
        return {"output": output, "usage": usage, "request_id": answer.request_id}
    message: dict[str, Any] = {
        "content": ([{"text": content}] if content else []) if answer.multimodal else content
    }
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    message["role"] = "assistant"
    output = {"choices": [{"message": message, "index": 0, "finish_reason": finish}]}
    if answer.search is not None:
        # The results come once, with "usage": {}; later chunks carry empty lists.
        output["search_info"] = (
            {"search_results": answer.search}
            if first
            else {"extra_tool_info": [], "search_results": []}
        )
    return {"output": output, "usage": usage, "request_id": answer.request_id}


def stream_payloads(answer: Generation, chunk_size: int) -> list[dict[str, Any]]:
    """The JSON objects of every ``result`` event, reasoning first, the final one last."""
    size = chunk_size
    think, text = answer.reasoning, answer.text
    cumulative = not answer.incremental
    payloads: list[dict[str, Any]] = []
    # Unused reasoning_content is "" on the text endpoint, absent on the multimodal one.
    idle = "" if answer.reasoning and not answer.multimodal else None
    if answer.search is not None and answer.message_format:
        payloads.append(_chunk(answer, "", idle, None, "null", {}, first=True))
    for end in range(size, len(think) + size, size):
        piece = think[:end] if cumulative else think[end - size : end]
        usage = _usage(answer, min(end, len(think)), 0)
        payloads.append(_chunk(answer, "", piece, None, "null", usage))
    for end in range(size, len(text) + size, size):
        piece = text[:end] if cumulative else text[end - size : end]
        usage = _usage(answer, len(think), min(end, len(text)))
        reasoning = think if cumulative and think else idle
        payloads.append(_chunk(answer, piece, reasoning, None, "null", usage))
    wrote = len(text)
    calls = answer.tool_calls
    for index, call in enumerate(calls):
        arguments = call["arguments"]
        half = len(arguments) // 2
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": arguments[:half]},
        }
        rest = {
            "index": index,
            "id": "",
            "type": "function",
            "function": {"arguments": arguments[half:]},
        }
        wrote += half
        usage = _usage(answer, len(think), wrote)
        payloads.append(_chunk(answer, "", idle, [first], "null", usage))
        wrote += len(arguments) - half
        last = index == len(calls) - 1
        # The last fragment and finish_reason "tool_calls" share a chunk, as captured.
        payloads.append(
            _chunk(
                answer,
                "",
                idle,
                [rest],
                answer.finish if last else "null",
                _usage(answer, len(think), wrote),
            )
        )
    if not calls:
        usage = _usage(answer, len(think), len(text))
        final = text if cumulative else ""
        reasoning = think if cumulative and think else idle
        payloads.append(_chunk(answer, final, reasoning, None, answer.finish, usage))
    return payloads


def json_payload(answer: Generation) -> dict[str, Any]:
    """The one body of a non-streaming answer."""
    usage = _usage(answer, len(answer.reasoning), len(answer.text))
    if not answer.message_format:
        output: dict[str, Any] = {"finish_reason": answer.finish, "text": answer.text}
        return {"output": output, "usage": usage, "request_id": answer.request_id}
    message: dict[str, Any] = {"role": "assistant"}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "function": {"name": c["name"], "arguments": c["arguments"]},
                "index": i,
                "id": c["id"],
                "type": "function",
            }
            for i, c in enumerate(answer.tool_calls)
        ]
    message["content"] = [{"text": answer.text}] if answer.multimodal else answer.text
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    output = {"choices": [{"finish_reason": answer.finish, "message": message}]}
    return {"output": output, "usage": usage, "request_id": answer.request_id}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def padded_payload(answer: Generation, size: int) -> str:
    """A valid, non-final chunk's data of exactly ``size`` bytes (or the least it can be)."""
    payload = _chunk(answer, "", None, None, "null", _usage(answer, 0, 0))
    empty = len(dumps(payload).encode())
    payload = _chunk(answer, "x" * max(0, size - empty), None, None, "null", _usage(answer, 0, 0))
    return dumps(payload)
