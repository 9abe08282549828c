"""Helpers for the relay tests: a relay in front of a simulator on real sockets.

``Relay`` runs ``tyqw.relay.create_app`` on 127.0.0.1 in the test's own event loop (for
aiohttp, node and the official SDK run in a thread); ``RelayThread`` runs the simulator
and the relay on a loop of their own, for tests whose client blocks (Selenium).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tyqw.relay import create_app
from tyqw.sse import ServerSentEvent, SSEDecoder
from tyqw.testing import BailianSimulator

from .helpers import missing, need_binary

T = TypeVar("T")

ALICE = "alice-token-5f3c9a1e7b2d"
BOB = "bob-token-8e6d4c2a0f1b9"
TOKENS = {ALICE: "alice", BOB: "bob"}
SSE_HEADERS = {"X-DashScope-SSE": "enable"}
BOUND = 10.0  # seconds: never reached when things work
JS = Path(__file__).parent / "js"  # the npm clients: npm ci --prefix tests/js


class Relay:
    """``create_app(...)`` served on 127.0.0.1:<free port>; ``async with Relay(sim)``.

    ``host``: another local address to listen on (see ``outside_address()``).

    Defaults: the simulator's app id, key and base URL, ``TOKENS``, no rate limit.
    """

    def __init__(
        self,
        sim: BailianSimulator | None,
        *,
        handler_cancellation: bool = False,
        mount: str = "",
        host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        if sim is not None:
            options.setdefault("api_key", sim.api_key)
            options.setdefault("base_url", sim.base_url)
            options.setdefault("app_ids", [sim.app_id])
        if "authenticate" not in options and "allow_anonymous" not in options:
            options.setdefault("tokens", TOKENS)
        options.setdefault("rate", None)
        self.app_ids: list[str] = list(options["app_ids"])
        self.relay_app = create_app(options.pop("app_ids"), **options)
        self.mount = mount
        self.host = host
        self.handler_cancellation = handler_cancellation
        self.runner: web.AppRunner | None = None
        self.root = ""

    async def __aenter__(self) -> Relay:
        app = self.relay_app
        if self.mount:
            app = web.Application()
            app.add_subapp(self.mount, self.relay_app)
        self.runner = web.AppRunner(app, handler_cancellation=self.handler_cancellation)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.root = f"http://{self.host}:{port}{self.mount}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def base_url(self) -> str:
        """What an SDK takes as its base URL: ``.../api/v1``."""
        return f"{self.root}/api/v1"

    def url(self, app_id: str | None = None) -> str:
        return f"{self.base_url}/apps/{app_id or self.app_ids[0]}/completion"


def post_head(relay: Relay, path: str, length: int, **headers: str) -> bytes:
    """The raw head of Alice's JSON POST of ``length`` bytes to ``path`` on ``relay``,
    for a test that writes (or withholds) the body itself."""
    port = relay.root.split("/")[2].rsplit(":", 1)[1]
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"Authorization: Bearer {ALICE}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(
    relay: Relay, receive_buffer: int | None = None, *, limit: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``relay``; with ``receive_buffer`` (bytes) set before it
    connects, a client whose socket fills at once when it stops reading; with ``limit``
    (bytes), one that stops taking from its socket past about twice that unread."""
    port = int(relay.root.split("/")[2].rsplit(":", 1)[1])
    limit = limit or 2**16  # asyncio's default
    if receive_buffer is None:
        return await asyncio.open_connection("127.0.0.1", port, limit=limit)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=limit)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the relay sends until it closes the connection (each read bounded)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(1 << 20), BOUND):
            data += chunk
    return data


def outside_address() -> str:
    """An address of this machine that is not loopback, for a peer that is not local.

    Connecting a UDP socket sends nothing; it only picks the interface a packet to a
    non-local address would leave by.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: documentation only, never reached
            address = str(probe.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        missing("an interface with an address other than loopback")
    return address


def auth(token: str = ALICE, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def body(prompt: str, session_id: str | None = None, **parameters: Any) -> dict[str, Any]:
    inp: dict[str, Any] = {"prompt": prompt}
    if session_id is not None:
        inp["session_id"] = session_id
    return {"input": inp, "parameters": parameters}


def events(raw: bytes) -> list[ServerSentEvent]:
    """Every event of an SSE body, the last one even without its blank line."""
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close(dispatch_incomplete=True)


def text_of(sse: list[ServerSentEvent]) -> str:
    """The reply an incremental stream spells out."""
    return "".join(
        json.loads(e.data)["output"].get("text", "") for e in sse if e.event == "result"
    )


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def events(self) -> list[ServerSentEvent]:
        return events(self.raw)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    payload: Any,
    headers: dict[str, str] | None = None,
) -> Answer:
    """POST and read the whole answer; ``payload`` bytes are sent as they are."""
    data: Any = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if len(data) > 512 * 1024:
        data = io.BytesIO(data)  # aiohttp warns of large bodies given as bytes
    async with http.post(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    ) as response:
        raw = await asyncio.wait_for(response.read(), BOUND)
        return Answer(response.status, CIMultiDict(response.headers), raw)


class RelayThread:
    """A simulator and a relay on an event loop in a thread of their own.

    ``call(coro)`` runs a coroutine on that loop and returns its result: the way a
    blocking client (Selenium) reaches the simulator's records and faults.
    """

    def __init__(self, **sim_options: Any) -> None:
        self.sim_options = sim_options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim: BailianSimulator | None = None
        self.relay: Relay | None = None

    def start(self, **relay_options: Any) -> RelayThread:
        self.thread.start()

        async def up() -> None:
            self.sim = await BailianSimulator(**self.sim_options).start()
            self.relay = await Relay(self.sim, **relay_options).__aenter__()

        self.call(up())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = BOUND) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def down() -> None:
            if self.relay is not None:
                await self.relay.__aexit__(None, None, None)
            if self.sim is not None:
                await self.sim.aclose()

        try:
            self.call(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(BOUND)
            self.loop.close()


async def run_node_script(script: str, scenario: dict[str, Any], *packages: str) -> list[Any]:
    """Run ``tests/js/<script>`` under node with ``scenario`` as its JSON argument and
    return the JSON lines it prints; skip when node or one of the npm ``packages`` is
    missing."""
    node = need_binary("node", "no node: install Node.js 20 (Debian: apt-get install nodejs)")
    for package in packages:
        if not (JS / "node_modules" / package).is_dir():
            missing(f"no {package} npm package: run npm ci --prefix tests/js")
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS / script),
        json.dumps(scenario),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), BOUND)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]
