"""Tools a model may call: their JSON schema, and running the calls a model makes.

A tool is a plain function (sync or async) whose schema comes from its signature, type
hints and docstring, or a ``(schema, handler)`` pair for a schema written by hand. When
a model asks for tools, the calls of one round run concurrently (a sync function in a
worker thread, so it never blocks the event loop); each call's result, or the reason it
could not run (arguments that are not JSON or do not fit the schema, a tool that raised)
is what the model is told, so it can answer from it or try again.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from ._models import ToolCall

__all__ = ["MAX_TOOL_ROUNDS", "ToolSpec", "Toolbox"]

MAX_TOOL_ROUNDS = 8
"""Rounds of tool calls one turn may make; the last round asks for an answer in text."""

ToolSpec = Callable[..., Any] | tuple[Mapping[str, Any], Callable[..., Any]]
"""A tool: a function, or a ``(schema, handler)`` pair (the schema as the service takes
it, ``{"type": "function", "function": {...}}``, or just its ``function`` object)."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARAM_LINE = re.compile(r"^\s*(?::param\s+)?\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:?\s*$")
_OTHER_SECTION = re.compile(r"^\s*(Returns?|Raises|Yields|Examples?|Note|Notes)\s*:?\s*$")
_RESULT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    schema: dict[str, Any]  # the ``function`` object sent to the model
    handler: Callable[..., Any]
    spread: bool  # call handler(**arguments) (a function), else handler(arguments)


class Toolbox:
    """A Session's tools: the schemas sent with every request, and their handlers.

    Example::

        box = Toolbox([get_weather])
        box.schemas()   # [{"type": "function", "function": {"name": "get_weather", ...}}]
    """

    __slots__ = ("_tools", "max_rounds")

    def __init__(self, tools: Sequence[ToolSpec], max_rounds: int = MAX_TOOL_ROUNDS) -> None:
        if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
            raise TypeError("tools must be a list of functions or (schema, handler) pairs")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError("max_tool_rounds must be an int >= 1")
        self.max_rounds = max_rounds
        self._tools: dict[str, _Tool] = {}
        for spec in tools:
            tool = _from_pair(spec) if isinstance(spec, tuple) else _from_function(spec)
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    def schemas(self) -> list[dict[str, Any]]:
        """``parameters.tools`` as the service takes it."""
        return [{"type": "function", "function": t.schema} for t in self._tools.values()]

    async def run(self, calls: list[ToolCall]) -> list[ToolCall]:
        """Run ``calls`` concurrently; each comes back with its ``result`` or ``error``."""
        return list(await asyncio.gather(*(self._run(call) for call in calls)))

    async def _run(self, call: ToolCall) -> ToolCall:
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return _failed(call, f"there is no tool named {call.name!r} (tools: {known})")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            return _failed(call, f"the arguments are not valid JSON ({exc}): {call.arguments}")
        problem = _misfit(arguments, tool.schema.get("parameters"))
        if problem is not None:
            return _failed(call, f"the arguments do not fit the tool's schema: {problem}")
        try:
            result = _call(tool.handler, arguments, spread=tool.spread)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a tool's failure is the model's to hear about
            return _failed(call, f"the tool raised {type(exc).__name__}: {exc}")
        return ToolCall(call.id, call.name, call.arguments, _text(result))


def round_messages(text: str, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """A round of tool calls as the model is told it in ``input.messages``: its own
    message with the calls, then one ``tool`` message per call with the result (or the
    error, as ``Error: ...``). Both a model turn's next round and the history of earlier
    exchanges send these."""
    messages: list[dict[str, Any]] = [
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for index, call in enumerate(calls)
            ],
        }
    ]
    for call in calls:
        content = call.result if call.error is None else f"Error: {call.error}"
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
        )
    return messages


def _call(handler: Callable[..., Any], arguments: dict[str, Any], *, spread: bool) -> Any:
    """Call ``handler``: a coroutine function is called here (its awaitable returned), a
    plain function in a worker thread, so a slow one never blocks the event loop."""
    args: tuple[Any, ...] = () if spread else (arguments,)
    kwargs = arguments if spread else {}
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004  (an async callable object)
    ):
        return handler(*args, **kwargs)
    return asyncio.to_thread(handler, *args, **kwargs)


def _failed(call: ToolCall, error: str) -> ToolCall:
    return ToolCall(call.id, call.name, call.arguments, None, error[:_RESULT_LIMIT])


def _text(result: Any) -> str:
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(result)
    return text[:_RESULT_LIMIT]


def _misfit(arguments: Any, schema: Any) -> str | None:
    """What is wrong with ``arguments`` for an object ``schema``, or ``None``: the top
    level checked (an object, required keys, no unknown keys when closed, JSON types)."""
    if not isinstance(arguments, dict):
        return f"expected a JSON object, got {type(arguments).__name__}"
    if not isinstance(schema, dict):
        return None
    properties = schema.get("properties") or {}
    missing = [k for k in schema.get("required") or () if k not in arguments]
    if missing:
        return f"missing {', '.join(map(repr, missing))}"
    if schema.get("additionalProperties") is False:
        unknown = [k for k in arguments if k not in properties]
        if unknown:
            return f"unknown {', '.join(map(repr, unknown))}"
    for key, value in arguments.items():
        rule = properties.get(key)
        if isinstance(rule, dict) and not _fits(value, rule):
            return f"{key!r} is {json.dumps(value, ensure_ascii=False)[:80]}, not {_kind(rule)}"
    return None


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _fits(value: Any, rule: dict[str, Any]) -> bool:
    if "enum" in rule and value not in rule["enum"]:
        return False
    kinds = rule.get("type")
    if kinds is None:
        options = rule.get("anyOf")
        return not isinstance(options, list) or any(
            isinstance(o, dict) and _fits(value, o) for o in options
        )
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return any(_JSON_TYPES.get(k, lambda v: True)(value) for k in kinds)


def _kind(rule: dict[str, Any]) -> str:
    if "enum" in rule:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in rule["enum"])
    kinds = rule.get("type", "any")
    return " or ".join(kinds) if isinstance(kinds, list) else str(kinds)


# -- schemas ------------------------------------------------------------------------------


def _from_pair(spec: tuple[Any, ...]) -> _Tool:
    if len(spec) != 2 or not isinstance(spec[0], Mapping) or not callable(spec[1]):
        raise TypeError("a tool given as a tuple must be (schema dict, handler function)")
    schema, handler = spec
    function = schema.get("function", schema) if schema.get("type") == "function" else schema
    if not isinstance(function, Mapping):
        raise TypeError("a tool's schema must be a dict")
    function = json.loads(json.dumps(function))  # a plain copy, and proof it is JSON
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a tool's schema needs a name of letters, digits, '_' or '-': {name!r}")
    return _Tool(name, function, handler, spread=False)


def _from_function(fn: Any) -> _Tool:
    if not callable(fn):
        raise TypeError(f"a tool must be a function or a (schema, handler) pair, not {fn!r}")
    name = getattr(fn, "__name__", "")
    if not _NAME.fullmatch(name):
        raise ValueError(f"a tool function needs a plain name, not {name!r}")
    summary, described = _docstring(inspect.getdoc(fn) or "")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"the type hints of tool {name!r} cannot be read: {exc}") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {name!r}: positional-only parameters cannot be named in JSON")
        hint = hints.get(parameter.name, Any)
        rule, optional = _schema(hint, f"{name}({parameter.name})")
        if parameter.name in described:
            rule["description"] = described[parameter.name]
        properties[parameter.name] = rule
        if parameter.default is parameter.empty and not optional:
            required.append(parameter.name)
    schema: dict[str, Any] = {"name": name}
    if summary:
        schema["description"] = summary
    schema["parameters"] = {"type": "object", "properties": properties, "required": required}
    return _Tool(name, schema, fn, spread=True)


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (the first paragraph) and each parameter's line, from a Google-style
    ``Args:`` section or Sphinx ``:param x:`` lines."""
    paragraphs = doc.strip().split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    if _SECTION.match(paragraphs[0].splitlines()[0] if paragraphs[0] else ""):
        summary = ""
    described: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if _SECTION.match(line):
            in_args = True
            continue
        if _OTHER_SECTION.match(line):
            in_args = False
            continue
        if line.strip().startswith(":param") or in_args:
            match = _PARAM_LINE.match(line)
            if match:
                described[match.group(1)] = match.group(2).strip()
    return summary, described


def _schema(hint: Any, where: str) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a type hint, and whether ``None`` is allowed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        optional = len(options) < len(args)
        if len(options) == 1:
            return _schema(options[0], where)[0], optional
        return {"anyOf": [_schema(a, where)[0] for a in options]}, optional
    if hint is Any or hint is inspect.Parameter.empty:
        return {}, False
    if origin is Literal:
        values = list(args)
        return {"enum": values}, None in values
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}, False
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if hint in simple:
        return {"type": simple[hint]}, False
    if hint is type(None):
        return {"type": "null"}, True
    if origin in (list, tuple, set, frozenset, Sequence) or hint in (list, tuple, set):
        rule: dict[str, Any] = {"type": "array"}
        if args:
            rule["items"] = _schema(args[0], where)[0]
        return rule, False
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        rule = {"type": "object"}
        if len(args) == 2:
            rule["additionalProperties"] = _schema(args[1], where)[0]
        return rule, False
    raise TypeError(f"tool {where}: the type {hint!r} has no JSON schema tyqw can write")
