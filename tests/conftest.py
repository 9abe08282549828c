"""Fixtures: a simulator per test, Sessions bound to it, and a raw byte-stream server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tyqw import Message, Session
from tyqw.testing import BailianSimulator

_ENV = (
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_APP_ID",
    "DASHSCOPE_BASE_URL",
    "DASHSCOPE_HTTP_BASE_URL",
    "DASHSCOPE_WORKSPACE",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's key or touch the real state directory."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def sim() -> AsyncIterator[BailianSimulator]:
    async with BailianSimulator() as simulator:
        yield simulator


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


SessionFactory = Callable[..., Session]


@pytest.fixture
async def make_session(sim: BailianSimulator, state_dir: Path) -> AsyncIterator[SessionFactory]:
    """Sessions bound to the simulator; all closed at the end of the test."""
    made: list[Session] = []

    def factory(**kwargs: Any) -> Session:
        session = sim_session(sim, state_dir, **kwargs)
        made.append(session)
        return session

    yield factory
    for session in made:
        await session.aclose()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""What a hand-written server does with one connection."""

TcpServerFactory = Callable[[Script], Awaitable[str]]


@pytest.fixture
async def tcp_server() -> AsyncIterator[TcpServerFactory]:
    """``await tcp_server(script)`` listens on 127.0.0.1, runs ``script`` for each
    connection and returns the base URL. A client that goes away ends the script quietly;
    the connection is closed after it, and every server at the end of the test.
    """
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await script(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


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


@pytest.fixture
def raw_server(tcp_server: TcpServerFactory) -> RawServerFactory:
    """``await raw_server(chunks, content_type=..., status=...)`` serves ``chunks`` as
    the body of every response, each chunk its own write, then closes the connection.

    A chunk may be a float: the server pauses that many seconds (for stall tests).
    """

    async def start(
        chunks: Sequence[bytes | float],
        *,
        status: int = 200,
        content_type: str = "text/event-stream;charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> RawServer:
        state = RawServer()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                state.requests.append(await read_request(reader))
                extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                    f"connection: close\r\n{extra}\r\n".encode()
                )
                for chunk in chunks:
                    if isinstance(chunk, float):
                        await asyncio.sleep(chunk)
                    else:
                        writer.write(chunk)
                        await writer.drain()
            finally:
                state.disconnected.set()

        state.base_url = await tcp_server(answer)
        return state

    return start


def bailian_event(n: int, output: dict[str, Any], request_id: str = "req-1") -> bytes:
    """One event exactly as the service frames it."""
    import json

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
