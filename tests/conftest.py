"""Fixtures: a simulator per test, Sessions bound to it, and a raw byte-stream server.

Plain helpers are in ``helpers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw import Session, _config
from tyqw._config import ENV_NAMES
from tyqw.stores import FileStore, MemoryStore, Store
from tyqw.testing import BailianSimulator

from .helpers import (
    RawServer,
    RawServerFactory,
    RedisProcess,
    Script,
    SessionFactory,
    TcpServerFactory,
    TranscriptDictStore,
    missing,
    read_request,
    sim_session,
)
from .relay_helpers import Relay


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's key (nor ~/.dashscope/api_key), or touch the real
    state directory."""
    for name in (*ENV_NAMES, "TYQW_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setattr(_config, "DEFAULT_KEY_FILE", tmp_path / "no-such-home" / "api_key")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def sim() -> AsyncIterator[BailianSimulator]:
    async with BailianSimulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def relay(sim: BailianSimulator) -> AsyncIterator[Relay]:
    """A relay with the default options in front of ``sim`` (a module may define its own)."""
    async with Relay(sim) as running:
        yield running


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


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    """One real redis-server for the whole test run (skips with a hint when absent)."""
    redis = RedisProcess()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """The URL of an empty Redis database: the shared server, flushed for this test."""
    if redis_process.process is None or redis_process.process.poll() is not None:
        redis_process.start()  # a test stopped it
    redis_process.command("FLUSHALL")
    return redis_process.url


@pytest.fixture(params=["file", "memory", "redis", "user"])
async def transcript_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store that keeps transcripts, empty: local and lazily written (file, memory),
    shared (redis), and a user's."""
    made: Store
    if request.param == "file":
        made = FileStore(tmp_path / "state")
    elif request.param == "memory":
        made = MemoryStore()
    elif request.param == "redis":
        try:
            from tyqw.stores import RedisStore
        except ImportError:  # pragma: no cover - the dev extra installs redis-py
            missing("RedisStore needs redis-py: pip install 'tyqw[redis]'")
        made = RedisStore.from_url(
            request.getfixturevalue("redis_url"),
            key_prefix=f"transcripts-{os.getpid()}-{id(request)}:",
        )
    else:
        made = TranscriptDictStore()
    yield made
    await made.aclose()
