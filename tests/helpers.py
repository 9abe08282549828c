"""Plain helpers the tests share: Sessions bound to servers, Bailian frames, components.

Fixtures live in ``conftest.py``; everything here is an ordinary function or class.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tyqw import Message, Session
from tyqw.testing import BailianSimulator

SessionFactory = Callable[..., Session]

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""What a hand-written server does with one connection."""

TcpServerFactory = Callable[[Script], Awaitable[str]]


def missing(hint: str) -> NoReturn:
    """Skip a test whose real component (Redis, Chromium, node...) is absent.

    Locally that is a skip with a one-line hint; under CI (``CI`` set in the environment,
    as ``.ci/run`` does) it is a failure, so CI never passes with those tests skipped.
    """
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this component: {hint}", pytrace=False)
    pytest.skip(hint)


def need_binary(name: str, hint: str) -> str:
    """The path of the program ``name`` on PATH, or ``missing(hint)``."""
    path = shutil.which(name)
    if path is None:
        missing(hint)
    return path


def sim_session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> Session:
    """A Session bound to the simulator; closing it is the caller's job (or make_session's)."""
    kwargs.setdefault("api_key", sim.api_key)
    kwargs.setdefault("base_url", sim.base_url)
    kwargs.setdefault("state_dir", state_dir)
    return Session(kwargs.pop("app_id", sim.app_id), **kwargs)


def raw_session(base_url: str, state_dir: Path, **kwargs: Any) -> Session:
    """A Session pointed at a hand-written server (which checks neither key nor app id)."""
    return Session("app", api_key="sk-test", base_url=base_url, state_dir=state_dir, **kwargs)


async def raw_messages(base_url: str, state_dir: Path, **kwargs: Any) -> list[Message]:
    """Every message of one ``stream("hi")`` turn against a hand-written server."""
    async with raw_session(base_url, state_dir, **kwargs) as session:
        return [m async for m in session.stream("hi")]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@dataclass
class RawServer:
    """A hand-written HTTP server that answers every request with the given bytes."""

    base_url: str = ""
    requests: list[bytes] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


RawServerFactory = Callable[..., Awaitable[RawServer]]


def bailian_event(n: int, output: dict[str, Any], request_id: str = "req-1") -> bytes:
    """One event exactly as the service frames it."""
    data = json.dumps(
        {"output": output, "usage": {}, "request_id": request_id},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return f"id:{n}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode()


def bailian_stream(pieces: Sequence[str], session_id: str = "s" * 32) -> bytes:
    """A whole incremental reply: one event per piece, then the ``stop`` event."""
    events = [
        bailian_event(i, {"session_id": session_id, "finish_reason": "null", "text": piece})
        for i, piece in enumerate(pieces, 1)
    ]
    events.append(
        bailian_event(
            len(pieces) + 1, {"session_id": session_id, "finish_reason": "stop", "text": ""}
        )
    )
    return b"".join(events)
