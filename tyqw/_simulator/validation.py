"""The checks a request passes before it is answered, in the service's order and words.

A wrong key is refused first (HTTP 401 even on streams), then an unknown app or a
missing workspace (see :mod:`.apps`), then a body that is not an app completion request.
What a valid body asks for is a :class:`Question`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BAD_BODY, NO_PROMPT, NO_USER_TURN, Refusal, invalid


@dataclass(slots=True)
class Question:
    """What a valid body asks: the prompt, the context, the ids, the parameters.

    ``history`` is the context the caller sent as ``messages`` (then the conversation
    ``session_id`` names is neither read nor written), else None.
    """

    prompt: str
    history: list[tuple[str, str]] | None
    session_id: str | None
    memory_id: str | None
    parameters: dict[str, Any]


def read_json(raw: bytes) -> Any:
    """The request body as JSON, or None when it is empty or not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def check_key(headers: Mapping[str, str], api_key: str | None) -> None:
    """Refuse a missing or wrong ``Authorization: Bearer`` key; ``api_key=None``: any."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or api_key not in (None, key):
        raise Refusal(401, "InvalidApiKey", inband=False)


def read_question(body: Any) -> Question:
    """What ``body`` asks, or the service's refusal of it."""
    if not isinstance(body, dict):
        raise invalid(BAD_BODY)
    inp, params = body.get("input"), body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(inp, dict) or not isinstance(params, dict):
        raise invalid(BAD_BODY)
    prompt, messages = inp.get("prompt"), inp.get("messages")
    session_id, memory_id = inp.get("session_id"), inp.get("memory_id")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("Input prompt must be a string.")
    if session_id is not None and not isinstance(session_id, str):
        raise invalid("Input session_id must be a string.")
    if memory_id is not None and not isinstance(memory_id, str):
        raise invalid("Input memory_id must be a string.")
    history = None
    if messages:
        prompt, history = _from_messages(messages, prompt)
    elif not prompt:
        raise invalid(NO_PROMPT)
    # "" names no conversation: the request starts one, as one without the field does.
    return Question(prompt, history, session_id or None, memory_id or None, params)


def _from_messages(messages: Any, prompt: str | None) -> tuple[str, list[tuple[str, str]]]:
    """Split caller-managed ``messages`` (plus an appended ``prompt``) into turns."""
    if not isinstance(messages, list):
        raise invalid(BAD_BODY)
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    items = [*messages, {"role": "user", "content": prompt}] if prompt else messages
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise invalid(BAD_BODY)
        role, content = item["role"], _content_text(item.get("content"))
        if role == "user":
            if pending is not None:
                turns.append((pending, ""))
            pending = content
        elif role == "assistant":
            turns.append((pending or "", content))
            pending = None
    if pending is None:
        raise invalid(NO_USER_TURN)
    return pending, turns


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return "" if content is None else str(content)
