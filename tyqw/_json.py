"""The one check that a value can travel as JSON text: no lone surrogate, no NaN or
infinity, anywhere in it.

Python's ``json`` writes ``float("nan")`` as ``NaN`` (which no JSON parser has to
accept) and a lone surrogate (``"\\ud800"``) as an escape that decodes to text no UTF-8
encoder takes; ``json.loads`` reads ``NaN``, ``Infinity`` and ``1e400`` (as ``inf``)
without a word. The SDK checks what a caller passes with it before any request, and the
relay checks each request body with it, so both refuse the same values with a message
that names the field. It sits at the bottom of the package and imports nothing of tyqw.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_json", "json_problem"]


def json_problem(value: Any, where: str) -> str | None:
    """What keeps ``value`` from being JSON text, naming the field, or None when nothing.

    ``where`` names ``value`` itself; a key adds ``.key``, a list item ``[i]``::

        json_problem({"n": float("nan")}, "biz_params")
        # "biz_params.n is nan: JSON numbers must be finite"
    """
    if _clean(value):
        return None
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:  # a loop, not recursion: a caller's deeply nested value cannot overflow
        item, name = pending.pop()
        if isinstance(item, str):
            if not _is_text(item):
                return f"{name} holds a lone surrogate (not valid Unicode text)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{name} is {item!r}: JSON numbers must be finite"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not _is_text(key):
                    return f"{name} has a key that holds a lone surrogate (not valid Unicode text)"
                pending.append((child, f"{name}.{key}" if name else str(key)))
        elif isinstance(item, (list, tuple)):
            pending.extend((child, f"{name}[{i}]") for i, child in enumerate(item))
    return None


def check_json(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the field when ``value`` cannot be JSON text.

    Example::

        check_json({"city": "Hangzhou"}, "biz_params")  # fine
        check_json("\\ud800", "prompt")  # ValueError: prompt holds a lone surrogate ...
    """
    problem = json_problem(value, where)
    if problem is not None:
        raise ValueError(problem)


def _clean(value: Any) -> bool:
    """True when nothing in ``value`` stops it being JSON text: the same walk as
    ``json_problem()``'s without building a name per item, which only a problem needs
    (every turn checks its prompt and options; nearly all are clean)."""
    if value.__class__ is str:
        return _is_text(value)
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not _is_text(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not _is_text(key):
                    return False
                pending.append(child)
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return True


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
