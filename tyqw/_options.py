"""Every option of a turn, where it goes in the request, and the checks of values the
caller passes, all made before any request.

An option goes into ``input`` or ``parameters`` (where the official SDKs put it), into
a header, or changes the turn itself (``stream``, ``read_timeout``, ``deadline`` ...);
an unknown name is a ``TypeError``, and so is a value of the wrong type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from ._models import ToolCall
    from ._tools import Toolbox

from ._json import check_json
from ._tools import round_messages

__all__ = ["Options", "RagOptions", "TurnOptions"]

_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# What may go in an HTTP header value: visible ASCII and spaces, no CR, LF or NUL.
HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_PLAIN_ID = re.compile(r"[0-9A-Za-z_.:-]{1,256}")
_SPACE = re.compile(r"\s")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

FlowStreamMode = Literal["full_thoughts", "agent_format", "message_format", "message_format_plus"]
DocReferenceType = Literal["simple", "indexed"]


class RagOptions(TypedDict, total=False):
    """``rag_options``: which knowledge to retrieve from (a plain dict works too).

    Example::

        await session.send("年假怎么算？", rag_options={"pipeline_ids": ["kb-hr"]})
    """

    pipeline_ids: Sequence[str]
    file_ids: Sequence[str]
    tags: Sequence[str]
    metadata_filter: Mapping[str, str]
    structured_filter: Mapping[str, Any]
    session_file_ids: Sequence[str]


class Options(TypedDict, total=False):
    """Keyword options of ``Session.send()`` and ``Session.stream()``.

    Each goes where the Bailian API expects it (the Options page of the docs says where);
    ``input`` / ``parameters`` dicts are merged in last, for keys tyqw does not know yet.
    ``headers``, ``workspace``, ``read_timeout``, ``deadline`` and ``session_id`` change
    this turn only, never the Session.

    Example::

        await session.send("总结一下", has_thoughts=True, enable_web_search=True,
                           biz_params={"user_prompt_params": {"city": "杭州"}})
    """

    # input (confirmed in dashscope 2.0.2 app/application.py _build_input_parameters
    # and the Java SDK's ApplicationParam.getInput)
    biz_params: Mapping[str, Any]
    memory_id: str
    image_list: Sequence[str]
    file_list: Sequence[str]
    messages: Sequence[Mapping[str, Any]]
    doc_reference_type: DocReferenceType
    doc_tag_codes: Sequence[str]
    # parameters (confirmed in the Java SDK's ApplicationParam.getParameters; the
    # Python SDK passes every other keyword through to parameters)
    has_thoughts: bool
    incremental_output: bool
    rag_options: RagOptions | Mapping[str, Any]
    flow_stream_mode: FlowStreamMode
    enable_thinking: bool
    enable_web_search: bool
    enable_system_time: bool
    enable_premium: bool
    dialog_round: int
    model_id: str
    mcp_servers: Sequence[str]
    temperature: float
    top_p: float
    top_k: int
    seed: int
    # parameters of a model turn (Session(model=...)) only: the text-generation
    # endpoint's (DashScope's generation API reference; dashscope 2.0.2 Generation.call)
    max_tokens: int
    max_completion_tokens: int
    stop: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    response_format: Mapping[str, Any]
    enable_search: bool
    search_options: Mapping[str, Any]
    thinking_budget: int
    reasoning_effort: str
    preserve_thinking: bool
    tool_choice: str | Mapping[str, Any]
    parallel_tool_calls: bool
    logprobs: bool
    top_logprobs: int
    # merged last
    input: Mapping[str, Any]
    parameters: Mapping[str, Any]
    # this turn only
    stream: bool
    headers: Mapping[str, str]
    workspace: str | None
    read_timeout: float
    deadline: float | None
    session_id: str


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(isinstance(item, str) for item in value)
    )


def _mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(key, str) for key in value)


def _messages(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(_mapping(item) and isinstance(item.get("role"), str) for item in value)
    )


# name -> (where it goes, check, what the check expects)
_BODY_OPTIONS: dict[str, tuple[Literal["input", "parameters"], Any, str]] = {
    "biz_params": ("input", _mapping, "a dict"),
    "memory_id": ("input", _str, "a str"),
    "image_list": ("input", _strings, "a list of str"),
    "file_list": ("input", _strings, "a list of str"),
    "messages": ("input", _messages, "a list of {'role': ..., 'content': ...} dicts"),
    "doc_reference_type": ("input", _str, "'simple' or 'indexed'"),
    "doc_tag_codes": ("input", _strings, "a list of str"),
    "has_thoughts": ("parameters", _bool, "a bool"),
    "incremental_output": ("parameters", _bool, "a bool"),
    "rag_options": ("parameters", _mapping, "a dict"),
    "flow_stream_mode": ("parameters", _str, "a str"),
    "enable_thinking": ("parameters", _bool, "a bool"),
    "enable_web_search": ("parameters", _bool, "a bool"),
    "enable_system_time": ("parameters", _bool, "a bool"),
    "enable_premium": ("parameters", _bool, "a bool"),
    "dialog_round": ("parameters", _int, "an int"),
    "model_id": ("parameters", _str, "a str"),
    "mcp_servers": ("parameters", _strings, "a list of str"),
    "temperature": ("parameters", _number, "a finite number"),
    "top_p": ("parameters", _number, "a finite number"),
    "top_k": ("parameters", _int, "an int"),
    "seed": ("parameters", _int, "an int"),
}


def _stop(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, Sequence) or isinstance(value, bytes) or not value:
        return False
    return (
        all(isinstance(item, str) for item in value)
        or all(_int(item) for item in value)
        or all(_sequence(item) and all(_int(i) for i in item) for item in value)
    )


def _sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _tool_choice(value: Any) -> bool:
    return value in ("auto", "none") or _mapping(value)


# A model turn's options, all in parameters; the rest goes through parameters={...}.
_MODEL_OPTIONS: dict[str, tuple[Any, str]] = {
    "incremental_output": (_bool, "a bool"),
    "enable_thinking": (_bool, "a bool"),
    "temperature": (_number, "a finite number"),
    "top_p": (_number, "a finite number"),
    "top_k": (_int, "an int"),
    "seed": (_int, "an int"),
    "max_tokens": (_int, "an int"),
    "max_completion_tokens": (_int, "an int"),
    "stop": (_stop, "a str, a list of str, a list of token ids or a list of lists of them"),
    "presence_penalty": (_number, "a finite number"),
    "frequency_penalty": (_number, "a finite number"),
    "repetition_penalty": (_number, "a finite number"),
    "response_format": (_mapping, "a dict such as {'type': 'json_object'}"),
    "enable_search": (_bool, "a bool"),
    "search_options": (_mapping, "a dict"),
    "thinking_budget": (_int, "an int"),
    "reasoning_effort": (_str, "a str"),
    "preserve_thinking": (_bool, "a bool"),
    "tool_choice": (_tool_choice, "'auto', 'none' or {'type': 'function', ...}"),
    "parallel_tool_calls": (_bool, "a bool"),
    "logprobs": (_bool, "a bool"),
    "top_logprobs": (_int, "an int"),
}

_CHOICES = {
    "flow_stream_mode": ("full_thoughts", "agent_format", "message_format", "message_format_plus"),
    "doc_reference_type": ("simple", "indexed"),
}
_RAG_OPTIONS = {
    "pipeline_ids": _strings,
    "file_ids": _strings,
    "tags": _strings,
    "session_file_ids": _strings,
    "metadata_filter": _mapping,
    "structured_filter": _mapping,
}
_TURN_OPTIONS = frozenset(
    {"stream", "headers", "workspace", "read_timeout", "deadline", "session_id"}
)


class TurnOptions:
    """One turn's request body and its per-call settings, checked.

    A model's turn (``model`` given) has the generation endpoint's body: ``model``,
    ``input.messages`` (``messages()`` fills them once the conversation is held) and
    ``parameters`` with ``result_format: "message"``.
    """

    __slots__ = (
        "body",
        "budget",
        "deadline",
        "forwarded",
        "headers",
        "incremental",
        "prompt",
        "read_timeout",
        "session_id",
        "stream",
        "system",
        "tools",
    )
    body: dict[str, Any]

    def __init__(
        self,
        prompt: str,
        options: Mapping[str, Any],
        *,
        model: str | None = None,
        system: str | None = None,
        tools: Toolbox | None = None,
        budget: int = 0,
    ) -> None:
        self.prompt = prompt
        self.system = system
        self.tools = tools
        self.budget = budget  # characters of history a model turn sends at most
        self.forwarded = False
        if model is not None:
            self._model(prompt, options, model)
            return
        _check_prompt(prompt)
        input_: dict[str, Any] = {"prompt": prompt}
        parameters: dict[str, Any] = {"incremental_output": True}
        self.stream = True
        self.headers: dict[str, str] = {}
        self.read_timeout: float | None = None
        self.deadline: float | Literal[False] | None = False  # False: the Session's
        self.session_id: str | None = None
        for key, value in options.items():
            rule = _BODY_OPTIONS.get(key)
            if rule is not None:
                where, check, expected = rule
                if not check(value):
                    raise TypeError(f"{key} must be {expected}, not {kind(value)}")
                choices = _CHOICES.get(key)
                if choices is not None and value not in choices:
                    raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
                if key == "rag_options":
                    _check_rag_options(value)
                check_json(value, key)
                (input_ if where == "input" else parameters)[key] = value
            elif key in ("input", "parameters"):
                if not _mapping(value):
                    raise TypeError(f"{key} must be a dict with str keys, not {kind(value)}")
                check_json(value, key)
                # Merged last: keys tyqw does not know yet.
                (input_ if key == "input" else parameters).update(value)
            elif key in _TURN_OPTIONS:
                self._turn_option(key, value)
            else:
                raise TypeError(
                    f"unknown option {key!r}; pass keys tyqw does not know as "
                    "input={...} or parameters={...}"
                )
        incremental = parameters.get("incremental_output", True)
        if not isinstance(incremental, bool):
            raise TypeError(f"incremental_output must be a bool, not {kind(incremental)}")
        self.incremental = incremental
        self.body = {"input": input_, "parameters": parameters}

    def _model(self, prompt: str, options: Mapping[str, Any], model: str) -> None:
        _check_prompt(prompt)
        parameters: dict[str, Any] = {"result_format": "message", "incremental_output": True}
        if self.tools is not None:
            parameters["tools"] = self.tools.schemas()
        self.stream = True
        self.headers = {}
        self.read_timeout = None
        self.deadline = False
        self.session_id = None
        extra: dict[str, Any] = {}
        for key, value in options.items():
            rule = _MODEL_OPTIONS.get(key)
            if rule is not None:
                check, expected = rule
                if not check(value):
                    raise TypeError(f"{key} must be {expected}, not {kind(value)}")
                check_json(value, key)
                parameters[key] = value
            elif key == "parameters":
                if not _mapping(value):
                    raise TypeError(f"{key} must be a dict with str keys, not {kind(value)}")
                check_json(value, key)
                extra.update(value)
            elif key in _TURN_OPTIONS and key != "session_id":
                self._turn_option(key, value)
            elif key in _BODY_OPTIONS or key in ("input", "session_id"):
                raise TypeError(
                    f"{key!r} is an option of app turns; a model session keeps its own "
                    "history (see the docs on models)"
                )
            else:
                raise TypeError(
                    f"unknown option {key!r}; pass parameters tyqw does not know as "
                    "parameters={...}"
                )
        if not self.stream and "incremental_output" not in options:
            # Incremental output belongs to streams; a JSON answer holds the whole text.
            del parameters["incremental_output"]
        parameters.update(extra)  # merged last: keys tyqw does not know yet
        incremental = parameters.get("incremental_output", self.stream)
        if not isinstance(incremental, bool):
            raise TypeError(f"incremental_output must be a bool, not {kind(incremental)}")
        self.incremental = incremental
        self.body = {
            "model": model,
            "input": {"messages": []},
            "parameters": parameters,
        }

    @classmethod
    def forward(cls, body: dict[str, Any], *, stream: bool) -> TurnOptions:
        """A relayed request's own generation body, sent as it is (its checks are the
        relay's): the client keeps the history and runs its tools."""
        options = cls.__new__(cls)
        options.prompt, options.system, options.tools, options.budget = "", None, None, 0
        options.forwarded = True
        options.stream = stream
        options.headers = {}
        options.read_timeout = None
        options.deadline = False
        options.session_id = None
        incremental = body.get("parameters", {}).get("incremental_output", False)
        options.incremental = incremental is True
        options.body = body
        return options

    def messages(self, history: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """``input.messages`` of a model turn: the system message, ``history`` (earlier
        messages, oldest first), then the prompt; also put into the body."""
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.extend(dict(m) for m in history)
        messages.append({"role": "user", "content": self.prompt})
        self.body["input"]["messages"] = messages
        return messages

    def add_round(self, text: str, calls: Sequence[ToolCall], last: bool) -> None:
        """After a round of tool calls: the model's call message and each result go at the
        end of ``input.messages``; on the ``last`` round the model must answer in text."""
        self.body["input"]["messages"].extend(round_messages(text, calls))
        if last:
            self.body["parameters"]["tool_choice"] = "none"

    def _turn_option(self, key: str, value: Any) -> None:
        if key == "stream":
            if not isinstance(value, bool):
                raise TypeError(f"stream must be a bool, not {kind(value)}")
            self.stream = value
        elif key == "headers":
            self.headers.update(check_extra_headers(value))
        elif key == "workspace":
            # "" (or None) means no workspace for this turn.
            self.headers["X-DashScope-WorkSpace"] = check_workspace(value) or ""
        elif key == "read_timeout":
            self.read_timeout = check_seconds("read_timeout", value)
        elif key == "deadline":
            self.deadline = None if value is None else check_seconds("deadline", value)
        elif value != "":  # "" is absent, as the service and the TypeScript class read it
            self.session_id = check_session_id(value)


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt is empty")
    check_json(prompt, "prompt")


def check_system(system: Any) -> str | None:
    """A model session's system message: a str (``None`` or ``""``: none)."""
    if system is None or system == "":
        return None
    if not isinstance(system, str):
        raise TypeError(f"system must be a str, not {kind(system)}")
    check_json(system, "system")
    return system


def _check_rag_options(value: Mapping[str, Any]) -> None:
    for key, item in value.items():
        check = _RAG_OPTIONS.get(key)
        if check is not None and not check(item):
            raise TypeError(f"rag_options[{key!r}] has the wrong type: {kind(item)}")


def kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- caller checks ------------------------------------------------------------------------


def check_workspace(workspace: Any) -> str | None:
    """``None`` and ``""`` mean no workspace."""
    if workspace is None or workspace == "":
        return None
    if not isinstance(workspace, str) or not _WORKSPACE.fullmatch(workspace):
        raise ValueError(
            f"invalid workspace {workspace!r}: expected ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$"
        )
    return workspace


def check_session_id(value: Any) -> str:
    """A conversation id: a non-empty str that can go on the wire and into a file."""
    if not isinstance(value, str):
        raise TypeError(f"session_id must be a str, not {kind(value)}")
    if not is_session_id(value):
        raise ValueError(
            f"session_id must be 1 to 256 printable characters without spaces, got {value[:80]!r}"
        )
    return value


def is_session_id(value: object) -> bool:
    """True for a usable conversation id (the server's, or the caller's)."""
    if not isinstance(value, str):
        return False
    if _PLAIN_ID.fullmatch(value):  # what Bailian sends: 32 hex digits
        return True
    return (
        0 < len(value) <= 256
        and value.isprintable()
        and not _SPACE.search(value)
        and _encodable(value)
    )


def check_seconds(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{label} must be a number of seconds, not {kind(value)}")
    if not (value > 0 and math.isfinite(value)):  # also refuses NaN and infinity
        raise ValueError(f"{label} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_extra_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str to str, not {kind(headers)}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, got {name!r}: {kind(value)}")
        if not _HEADER_NAME.fullmatch(name) or not HEADER_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r} is not a valid HTTP header name and value")
        if name.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
            raise ValueError(f"header {name!r} is set by tyqw and cannot be overridden")
        checked[name] = value
    return checked
