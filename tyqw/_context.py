"""A model turn's history: the conversation's transcript as ``input.messages``, trimmed.

The text-generation endpoint keeps nothing between requests, so every turn of a model
session sends the earlier exchanges again. They come from the conversation's transcript
(read under the conversation's lock, so workers sharing a store send the same history),
newest kept, oldest dropped first, whole exchanges only, until they fit the budget: a
long conversation never grows past the model's context. The system message and the new
prompt are not part of the budget; they are always sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._history import Exchange
from ._tools import round_messages

__all__ = ["DEFAULT_HISTORY_CHARS", "check_budget", "exchange_messages", "history_messages"]

DEFAULT_HISTORY_CHARS = 24_000
"""Characters of earlier exchanges a model turn sends at most.

Counted in characters because tyqw has no tokenizer: a Chinese character is about one
token and an English word about four characters to a token, so 24,000 characters stay
under about 24,000 tokens, well inside the 32k tokens of the smallest common Qwen
context (qwen-max), with room left for the system message, the prompt and the answer.
Raise it for long-context models (qwen-plus, qwen-turbo read 128k tokens and more).
"""


def check_budget(value: object) -> int:
    """``max_history_chars``: an int >= 0 (0 sends no history)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_history_chars must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError("max_history_chars must be >= 0")
    return value


def exchange_messages(exchange: Exchange) -> list[dict[str, Any]]:
    """One exchange as the messages the model saw: the prompt, the calls it made and
    their results, its answer. An exchange without an answer (a turn that failed before
    any text) is left out: the model never said anything to continue from."""
    reply = exchange.reply
    if not reply.text:
        return []
    messages: list[dict[str, Any]] = [{"role": "user", "content": exchange.prompt}]
    answered = [c for c in reply.tool_calls if c.result is not None or c.error is not None]
    if answered:
        messages.extend(round_messages("", answered))
    messages.append({"role": "assistant", "content": reply.text})
    return messages


def _size(messages: list[dict[str, Any]]) -> int:
    size = 0
    for message in messages:
        size += len(message["content"])
        for call in message.get("tool_calls", ()):
            size += len(call["function"]["arguments"])
    return size


def history_messages(exchanges: Sequence[Exchange], budget: int) -> list[dict[str, Any]]:
    """The newest exchanges, as messages, whose size fits ``budget`` characters."""
    kept: list[list[dict[str, Any]]] = []
    used = 0
    for exchange in reversed(exchanges):
        messages = exchange_messages(exchange)
        if not messages:
            continue
        size = _size(messages)
        if used + size > budget:
            break  # dropped from the oldest end: what is kept stays one piece
        used += size
        kept.append(messages)
    return [message for messages in reversed(kept) for message in messages]
