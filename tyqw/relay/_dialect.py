"""What the relay's chat dialects share: a chat request as one turn, the conversation it
continues, and a turn's messages as the parts a chat client shows.

The OpenAI Chat Completions endpoint and the AI SDK UI stream differ only in their wire
shapes. Both run their turn through the relay's own path (``UserSessions.use()`` and
``Session.stream()``, bounded by the client's connection) and read it with ``Reading``.

The conversation behind a stateless client. A chat client resends the whole history on
every turn; the service keeps a conversation only by its ``session_id``. After each turn
the relay stores a *pointer*: under the digest of the history as the client will resend
it (earlier messages, the prompt, the reply as the client received it), the
conversation's ``session_id``. A request whose earlier messages digest to a stored
pointer of the same user continues that conversation with the new prompt only. The
pointer is moved on by the turn, so a regenerated answer or an edited message (an older
prefix, or one never seen) finds none, and starts a conversation seeded with the
client's history as ``input.messages``; so do a first request that brings history and
a conversation idle past the service's lifetime. The users' text is not kept by the
pointers: they hold a digest, an id and a time.

A client may also name its conversation (the UI stream's chat id, OpenAI's
``X-Tyqw-Conversation``): a pointer then counts only if it is that conversation's, and a
named conversation that is not continued goes on from the client's history in the same
Session (its record and transcript kept) instead of a new one.

A dialect's conversation is one of the user's named conversations (``session_name()``:
the chat page lists, shows and deletes it like its own), and a pointer the record
``"<user>\\0match\\0<digest>"`` beside them, per user (the relay refuses user names
holding a NUL, so no user can spell another's names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web

from .. import TyqwError
from .._events import Announced
from .._json import json_problem
from .._models import Citation, Message, Reply, Thought, WorkflowEvent, plain_markers
from ..stores import Store
from ._gone import read_within
from ._request import invalid
from ._trace import note_user
from ._users import CONVERSATION_ID, UserSessions, session_name

__all__ = [
    "LIFETIME",
    "MAX_BODY",
    "ChatTurn",
    "Host",
    "Part",
    "Plan",
    "Reading",
    "Role",
    "advance",
    "check_key",
    "check_prompt",
    "digest",
    "plan",
    "preflight",
    "read_json",
    "sources",
    "token_counts",
    "turn_options",
    "user",
    "workflow_data",
]

logger = logging.getLogger("tyqw.relay")

#: Seconds the service keeps an idle conversation: an older pointer is not followed.
LIFETIME = 3600.0
#: The most bytes a dialect's request body may have (it carries the whole history).
MAX_BODY = 8 * 1024 * 1024

Role = Literal["system", "user", "assistant"]


class Host(Protocol):
    """What a dialect uses of the relay (``_app._Relay``)."""

    app_ids: tuple[str, ...]
    models: tuple[str, ...]
    aliases: dict[str, str]  # alias -> a served app id or model
    max_messages: int
    sessions: UserSessions
    turn_options: dict[str, Any]
    max_prompt: int
    cors: frozenset[str]
    body_timeout: float
    send_timeout: float

    async def _user(self, request: web.Request) -> str: ...

    async def _spend(self, user: str) -> None: ...

    def _cors(self, request: web.Request) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One chat request as a turn: the earlier messages, the new prompt, and the
    conversation the client named (the UI stream's chat id, OpenAI's conversation
    header), if any. ``resume``: a request without earlier messages continues the named
    conversation (a client that sends only the new message) instead of starting it."""

    app_id: str
    user: str
    history: tuple[tuple[Role, str], ...]
    prompt: str
    key: str | None = None
    resume: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """How to run a ``ChatTurn``: in which Session, continuing which id, seeded how."""

    name: str  # the Session's name in the relay's store
    key: str  # the conversation
    session_id: str | None  # the service's id to continue; None: a new conversation
    seed: list[dict[str, str]] | None  # input.messages to send; None: the prompt only
    pointer: str | None  # the pointer followed, moved on by the turn


async def user(host: Host, request: web.Request) -> str:
    """The request's user, as the relay's other endpoints find it."""
    name = await host._user(request)
    note_user(name)
    return name


async def read_json(host: Host, request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: a 400 when it is not one or is too large, a
    408 when it does not arrive in time (answer that with ``hang_up()``)."""
    raw = await read_within(request, MAX_BODY + 1, host.body_timeout)
    if len(raw) > MAX_BODY:
        raise invalid(f"The request body is larger than {MAX_BODY} bytes.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    # Text the service could not be sent and numbers JSON has no room for are the
    # client's mistake, named, as on the native endpoint.
    problem = json_problem(body, "")
    if problem is not None:
        raise invalid(problem)
    return body


def check_prompt(turn: ChatTurn, max_prompt: int) -> ChatTurn:
    if not turn.prompt.strip():
        raise invalid("The last message must be the user's, with some text.")
    if len(turn.prompt) > max_prompt:
        raise invalid(
            f"The last message is {len(turn.prompt)} characters; the limit is {max_prompt}."
        )
    return turn


# -- the conversation ----------------------------------------------------------------


def digest(history: Sequence[tuple[str, str]]) -> str:
    """A digest of ``(role, text)`` messages, each text with its ends stripped (clients
    trim what they echo back)."""
    h = hashlib.sha256()
    for role, text in history:
        data = text.strip().encode("utf-8", "surrogatepass")
        h.update(b"%s\0%d\0" % (role.encode(), len(data)))
        h.update(data)
    return h.hexdigest()


def check_key(key: str, where: str) -> str:
    """A conversation named by the client: as the chat page names its own."""
    if not CONVERSATION_ID.fullmatch(key):
        raise invalid(f"{where} must be 1 to 64 letters, digits, '-' or '_'")
    return key


def _pointer_name(user: str, history_digest: str) -> str:
    return f"{user}\0match\0{history_digest}"


def _messages(history: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in history]


async def plan(store: Store, turn: ChatTurn) -> Plan:
    """Which conversation ``turn`` continues (see the module), or how to start one."""
    if not turn.history:
        key = turn.key or uuid.uuid4().hex
        name = session_name(turn.user, key)
        if turn.resume and turn.key is not None:
            record = await store.get(turn.app_id, name)
            if _fresh(record):
                assert record is not None
                return Plan(name, key, str(record["session_id"]), None, None)
        return Plan(name, key, None, None, None)
    pointer = _pointer_name(turn.user, digest(turn.history))
    record = await store.get(turn.app_id, pointer)
    if (
        record is not None
        and isinstance(found := record.get("conversation"), str)
        and (turn.key is None or found == turn.key)
        and _fresh(record)
    ):
        seed = _messages(turn.history) if record.get("seeded") is True else None
        name = session_name(turn.user, found)
        return Plan(name, found, str(record["session_id"]), seed, pointer)
    if turn.key is None:
        key = uuid.uuid4().hex
        return Plan(session_name(turn.user, key), key, None, _messages(turn.history), None)
    # A named conversation that has turns goes on from the client's history (which the
    # service takes over its session_id), rather than being cleared: what it kept of
    # the earlier turns (their transcript) stays.
    name = session_name(turn.user, turn.key)
    record = await store.get(turn.app_id, name)
    current = record.get("session_id") if record is not None else None
    session_id = current if isinstance(current, str) and current else None
    return Plan(name, turn.key, session_id, _messages(turn.history), None)


def _fresh(record: dict[str, Any] | None) -> bool:
    """A record of a conversation the service may still hold."""
    if record is None or not isinstance(record.get("session_id"), str):
        return False
    updated = record.get("updated_at")
    return isinstance(updated, (int, float)) and time.time() - updated < LIFETIME


async def advance(store: Store, turn: ChatTurn, how: Plan, session_id: str, shown: str) -> None:
    """After a turn: point the history the client will send next at the conversation.

    ``shown`` is the reply as the client received it. A conversation started from the
    client's history stays seeded: the service keeps no context given as messages.
    """
    after = digest([*turn.history, ("user", turn.prompt), ("assistant", shown)])
    record = {
        "session_id": session_id,
        "conversation": how.key,
        "seeded": how.seed is not None,
        "updated_at": time.time(),
    }
    try:
        await store.set(turn.app_id, _pointer_name(turn.user, after), record)
        if how.pointer is not None:
            await store.delete(turn.app_id, how.pointer)
    except TyqwError as exc:
        # The reply is out already; without the pointer the next turn starts again
        # from the client's history, which loses nothing the user sees.
        logger.warning("tyqw.relay: could not record where a chat goes on: %s", exc)


def preflight(host: Host) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A CORS preflight handler for a dialect's routes: the origins the relay allows,
    with whatever headers the client's SDK sends (openai's x-stainless-* ones)."""

    async def handler(request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if origin not in host.cors:
            return web.Response(status=403, text="origin not allowed\n")
        asked = request.headers.get("Access-Control-Request-Headers", "")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": asked or "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    return handler


def turn_options(host: Host, how: Plan) -> dict[str, Any]:
    """``Session.stream()`` options of a dialect's turn: the operator's, increments,
    thoughts (shown as reasoning) unless the operator said otherwise, and the seed."""
    options: dict[str, Any] = {**host.turn_options, "incremental_output": True}
    options.setdefault("has_thoughts", True)
    if how.seed is not None:
        options["messages"] = how.seed
    return options


# -- reading a turn ------------------------------------------------------------------

# ("text", str) | ("reasoning", str) | ("workflow", WorkflowEvent)
Part = tuple[str, Any]

_WANTED: dict[str, list[Any]] = {
    "thought": [None],
    "message": [],
    "reference": [],
    "workflow": [None],
}
_MARKER = "<ref>"
_HELD_AT_MOST = 160  # characters held back as a possible marker before giving up


class Reading:
    """A turn's messages as parts: text with each ``<ref>[n]</ref>`` citation marker made
    a plain ``[n]`` (across event boundaries), each new thought once as reasoning, and
    each workflow node event."""

    __slots__ = ("_events", "_held", "shown")

    def __init__(self) -> None:
        self._events = Announced()
        self._held = ""
        self.shown: list[str] = []  # the text given out so far

    def read(self, message: Message) -> list[Part]:
        parts: list[Part] = []
        if message.thoughts or message.workflow_message:
            for kind, value in self._events.derive(message, _WANTED):
                if kind == "thought":
                    text = _reasoning(value)
                    if text:
                        parts.append(("reasoning", text))
                elif kind == "workflow":
                    parts.append(("workflow", value))
        if message.delta:
            text = self._plain(message.delta)
            if text:
                self.shown.append(text)
                parts.append(("text", text))
        return parts

    def rest(self) -> str:
        """The text held back at the end of the turn (never a whole marker)."""
        text, self._held = self._held, ""
        if text:
            text = plain_markers(text)
            self.shown.append(text)
        return text

    def _plain(self, piece: str) -> str:
        text = self._held + piece if self._held else piece
        if "<" not in text:
            self._held = ""
            return text
        cut = _open_marker(text)
        self._held = text[cut:]
        return plain_markers(text[:cut])


def _open_marker(text: str) -> int:
    """Where a citation marker that may not be complete yet starts (else the end)."""
    start = text.rfind(_MARKER)
    if start != -1 and text.find("</ref>", start) == -1 and len(text) - start <= _HELD_AT_MOST:
        return start
    for n in range(min(len(_MARKER) - 1, len(text)), 0, -1):
        if _MARKER.startswith(text[-n:]):
            return len(text) - n
    return len(text)


def _reasoning(thought: Thought) -> str:
    if thought.action_type == "reasoning":
        return thought.text
    # A step of the app's work (retrieval, a plugin, memory): named, then what it did.
    name = thought.action_name or thought.action or thought.action_type or "step"
    return f"[{name}] {thought.text}\n" if thought.text else f"[{name}]\n"


def sources(citations: Sequence[Citation]) -> str:
    """The cited documents as a readable list under the reply."""
    if not citations:
        return ""
    lines = ["", "", "Sources:"]
    for citation in citations:
        title = citation.title or citation.doc_name or citation.doc_id or ""
        excerpt = " ".join((citation.excerpt or "").split())
        if len(excerpt) > 200:
            excerpt = excerpt[:199] + "…"
        line = f"{citation.marker} {title}".rstrip()
        lines.append(f"{line}: {excerpt}" if excerpt else line)
    return "\n".join(lines)


def token_counts(reply: Reply) -> tuple[int, int]:
    """Input and output tokens of a turn, summed over the models it used."""
    usage = reply.usage
    models = usage.get("models") if isinstance(usage, dict) else None
    read = wrote = 0
    for model in models if isinstance(models, list) else ():
        if isinstance(model, dict):
            read += _count(model.get("input_tokens"))
            wrote += _count(model.get("output_tokens"))
    return read, wrote


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def workflow_data(event: WorkflowEvent) -> dict[str, Any]:
    return {
        "node_id": event.node_id,
        "node_name": event.node_name,
        "node_type": event.node_type,
        "node_status": event.node_status,
        "completed": event.completed,
        "content": event.content,
    }
