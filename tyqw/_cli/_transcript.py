"""A conversation's transcript as the ``tyqw`` commands show it: as text for a terminal
(``chat``'s ``/history`` and its recap on resuming, ``conversations show``), as JSON
lines or Markdown for ``conversations export``.

Text meant for a terminal has its control characters escaped (a reply cannot move the
cursor or recolour the screen); the JSON lines are ``Exchange.to_dict()`` as they are.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

from .. import Exchange, RecordedError
from ._output import shown

RECAP = 3
"""Exchanges ``tyqw chat`` shows when it resumes a conversation."""

_RECAP_CHARS = 200  # of each prompt and reply in the recap


def _when(exchange: Exchange) -> str:
    return exchange.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _terminal(text: str) -> str:
    """``text`` safe for a terminal, its line breaks kept."""
    return "\n".join(shown(line) for line in text.split("\n"))


def _error(exchange: Exchange) -> str | None:
    error = exchange.reply.error
    if error is None:
        return None
    kind = error.kind if isinstance(error, RecordedError) else type(error).__name__
    return f"{kind}: {error}"


def text_lines(exchanges: list[Exchange]) -> Iterator[str]:
    """The whole transcript for a terminal: each exchange's time, prompt and reply."""
    for exchange in exchanges:
        yield f"[{_when(exchange)}]"
        yield f"you: {_terminal(exchange.prompt)}"
        yield f"app: {_terminal(exchange.reply.text)}"
        error = _error(exchange)
        if error is not None:
            yield f"(failed: {shown(error)})"
        yield ""


def recap_lines(exchanges: list[Exchange]) -> Iterator[str]:
    """The last few exchanges, shortened: what a resumed chat shows before its prompt."""
    shown_ = exchanges[-RECAP:]
    earlier = len(exchanges) - len(shown_)
    more = f"; {earlier} earlier" if earlier else ""
    yield f"(resuming this conversation{more}; /history shows it all)"
    for exchange in shown_:
        yield f"you: {_short(exchange.prompt)}"
        yield f"app: {_short(exchange.reply.text)}"


def _short(text: str) -> str:
    one_line = " ".join(text.split())
    if len(one_line) > _RECAP_CHARS:
        one_line = one_line[: _RECAP_CHARS - 1] + "…"
    return shown(one_line)


def jsonl_lines(exchanges: list[Exchange]) -> Iterator[str]:
    """One JSON object per exchange: ``Exchange.to_dict()``, readable by ``from_dict()``."""
    for exchange in exchanges:
        yield json.dumps(exchange.to_dict(), ensure_ascii=False)


def markdown_lines(app_id: str, name: str, exchanges: list[Exchange]) -> Iterator[str]:
    """The transcript as a Markdown document: a section per exchange."""
    yield f"# Conversation {name}"
    yield ""
    yield f"App `{app_id}`, {len(exchanges)} exchanges, exported {_utc_now()}."
    for exchange in exchanges:
        yield ""
        yield f"## {exchange.started_at.isoformat(timespec='seconds')}"
        yield ""
        yield f"**You:** {exchange.prompt}"
        yield ""
        yield f"**App:** {exchange.reply.text}"
        error = _error(exchange)
        if error is not None:
            yield ""
            yield f"> The turn failed: {error}"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
