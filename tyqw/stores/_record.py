"""The record of one conversation: its shape, its key, and its bytes in a store.

Every shipped store encodes a record the same way, as ASCII JSON, so any ``str`` tyqw
is handed (a lone surrogate such as ``"\\ud800"`` included) is stored and read back
exactly, and a value that cannot be JSON is refused before anything is written.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from typing import Any

MAX_RECORD = 64 * 1024
"""The largest encoded record a store reads: a record is an id, a few counters, a time."""

_OWN_KEYS = ("app_id", "name")

# One encoder for everything a store writes (records, transcript entries): json.dumps()
# with options builds a new encoder per call, which cost more than a transcript's write.
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
_UTF8_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def to_json(value: object) -> str:
    """``value`` as compact ASCII JSON, as every store writes it; ``TypeError``,
    ``ValueError`` (NaN, a cycle) or ``RecursionError`` for what is not JSON."""
    return _ENCODER.encode(value)


def to_utf8_json(value: object) -> bytes:
    """``value`` as compact JSON in UTF-8, as transcripts are written: Chinese text takes
    half the bytes of ``\\u`` escapes and encodes ~3x faster (a long reply is written
    whole). A lone surrogate (a reply may carry one, escaped) cannot be UTF-8: such a
    value is written as ASCII JSON, which any JSON reader reads the same. The errors of
    ``to_json()``."""
    try:
        return _UTF8_ENCODER.encode(value).encode()
    except UnicodeEncodeError:
        return _ENCODER.encode(value).encode()


@functools.lru_cache(maxsize=4096)  # every turn needs it: a hash costs a few microseconds
def conversation_key(app_id: str, name: str) -> str:
    """A short, fixed-length key for ``(app_id, name)``: the same as tyqw 0.1's file name.

    ``surrogatepass`` gives every ``str`` a key; for valid text it is plain UTF-8. The
    first NUL splits 0.1's form, so an ``app_id`` holding one (never a Session's) is
    spelled without any NUL instead, and no two conversations share a key.
    """
    if "\0" in app_id:
        spelled = f"{len(app_id)}:{app_id}{name}".encode("utf-8", "surrogatepass")
        data = b"~" + spelled.hex().encode()
    else:
        data = f"{app_id}\0{name}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_problem(record: object) -> str | None:
    """What is wrong with ``record`` as a conversation record, or ``None``.

    Checked: ``session_id`` is a non-empty ``str``; ``usage``, when present, maps model
    ids to ``{"input_tokens": int, "output_tokens": int, ...}``; ``updated_at``, when
    present, is a finite number. Other keys are kept and not checked.
    """
    if not isinstance(record, dict):
        return f"a record is a dict, not {type(record).__name__}"
    session_id = record.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "session_id is not a non-empty string"
    usage = record.get("usage")
    if usage is not None and not (
        isinstance(usage, dict)
        and all(
            isinstance(model, str)
            and isinstance(counts, dict)
            and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                for k, v in counts.items()
            )
            for model, counts in usage.items()
        )
    ):
        return "usage is not a mapping of model ids to token counts"
    if "updated_at" in record and not _is_number(record["updated_at"]):
        return "updated_at is not a finite number"
    return None


def copy_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a decoded record that a caller may change, as deep as the record is
    (``usage`` is checked to hold flat dicts of ints: copied without ``deepcopy``)."""
    copied = dict(record)
    for key, value in record.items():
        if key == "usage" and isinstance(value, dict):
            copied[key] = {model: dict(counts) for model, counts in value.items()}
        elif isinstance(value, (dict, list)):
            copied[key] = copy.deepcopy(value)
    return copied


def encode(app_id: str, name: str, record: dict[str, Any]) -> bytes:
    """The stored form: ``{"app_id", "name", **record}`` as ASCII JSON.

    Raises ``ValueError`` for a record of the wrong shape or one that is not JSON (the
    caller turns that into its store's failure behaviour).
    """
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(problem)
    stored: dict[str, Any] = {"app_id": app_id, "name": name}
    stored.update((k, v) for k, v in record.items() if k not in _OWN_KEYS)
    try:
        text = to_json(stored)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"the record is not JSON ({type(exc).__name__})") from None
    data = text.encode("ascii")
    if len(data) > MAX_RECORD:
        raise ValueError(f"the record is over {MAX_RECORD} bytes")
    return data


def decode(data: bytes | str) -> tuple[str, str, dict[str, Any]] | str:
    """``(app_id, name, record)`` from the stored form, or a description of the damage.

    Never raises: deep nesting, invalid UTF-8, huge numbers and wrong types are damage.
    """
    if len(data) > MAX_RECORD:
        return f"over {MAX_RECORD} bytes"
    try:
        stored = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"not JSON ({type(exc).__name__})"
    if not isinstance(stored, dict):
        return f"a JSON {type(stored).__name__}, not an object"
    app_id, name = stored.pop("app_id", None), stored.pop("name", None)
    if not isinstance(app_id, str) or not isinstance(name, str):
        return "app_id or name is not a string"
    problem = record_problem(stored)
    if problem is not None:
        return problem
    return app_id, name, stored
