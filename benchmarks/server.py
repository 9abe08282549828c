"""A fast local Bailian app-completion server for benchmarks (not a simulator: no checks).

Raw ``asyncio`` protocol, HTTP/1.1 with keep-alive, chunked SSE replies rendered once per
reply shape and cached, so that the server spends as little CPU as possible per event.
It serves ``POST {any prefix}/apps/{app_id}/completion``; the reply shape comes from the
request body's ``parameters`` (see ``scenarios.py``). ``GET /__bench/stats`` returns the
server's own CPU time, so the driver can show the server is not the bottleneck.

Run: ``python benchmarks/server.py --port 0``; it prints one JSON line ``{"port": N}`` and
serves until stdin closes (so it dies with its parent), SIGTERM, or ``--lifetime`` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import itertools
import json
import random
import resource
import signal
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import LARGEST_RANDOM_SLICE, Reply, scenarios

from tyqw._wire import dumps, frame  # the one Bailian frame writer

SESSION_ID = uuid.UUID(int=0x7E57_0000_0000_4000_8000_0000_0000_0001).hex
MODEL = "qwen-plus"
INPUT_TOKENS = 12


class Rendered:
    """Pre-rendered bytes of one reply shape: the head and one HTTP chunk per event."""

    __slots__ = ("_joined", "_sliced", "chunks", "events", "final_text", "head", "request_id")

    def __init__(self, reply: Reply) -> None:
        self.request_id = str(uuid.uuid4())
        self.head = (
            "HTTP/1.1 200 OK\r\n"
            "content-type: text/event-stream;charset=UTF-8\r\n"
            "transfer-encoding: chunked\r\n"
            "connection: keep-alive\r\n"
            "cache-control: no-cache\r\n"
            f"x-request-id: {self.request_id}\r\n"
            "x-dashscope-finished: false\r\n"
            "\r\n"
        ).encode()
        pieces = reply.pieces()
        texts: list[str]
        if reply.incremental:
            texts = [*pieces, ""]
        else:
            texts, so_far = [], ""
            for piece in pieces:
                so_far += piece
                texts.append(so_far)
            texts.append(so_far)
        self.final_text = "".join(pieces)
        last = len(texts) - 1
        # The SSE bytes of each event, then the same as one HTTP chunk each.
        self.events = [
            self._event(i + 1, text, "stop" if i == last else "null")
            for i, text in enumerate(texts)
        ]
        self.chunks = [_chunk(event) for event in self.events]
        self.chunks.append(b"0\r\n\r\n")
        self._joined: bytes | None = None
        self._sliced: dict[int, list[bytes]] = {}

    def _event(self, n: int, text: str, finish_reason: str) -> bytes:
        payload = {
            "output": {"session_id": SESSION_ID, "finish_reason": finish_reason, "text": text},
            "usage": {
                "models": [{"model_id": MODEL, "input_tokens": INPUT_TOKENS, "output_tokens": n}]
            },
            "request_id": self.request_id,
        }
        return frame(n, dumps(payload))

    def joined(self) -> bytes:
        if self._joined is None:
            self._joined = b"".join(self.chunks)
        return self._joined

    def sliced(self, size: int) -> list[bytes]:
        """The SSE bytes in HTTP chunks of ``size`` bytes, or of random sizes when
        ``size`` is negative (seeded, so every request gets the same cuts), then the end."""
        if size not in self._sliced:
            body = b"".join(self.events)
            rng = random.Random(size)
            bounds = [0]
            while bounds[-1] < len(body):
                step = size if size > 0 else rng.randint(1, LARGEST_RANDOM_SLICE)
                bounds.append(min(bounds[-1] + step, len(body)))
            chunks = [_chunk(body[a:b]) for a, b in itertools.pairwise(bounds)]
            self._sliced[size] = [*chunks, b"0\r\n\r\n"]
        return self._sliced[size]

    def json_body(self) -> bytes:
        """The non-streaming answer (no ``X-DashScope-SSE: enable``)."""
        return json.dumps(
            {
                "output": {
                    "session_id": SESSION_ID,
                    "finish_reason": "stop",
                    "text": self.final_text,
                },
                "usage": {"models": [{"model_id": MODEL, "input_tokens": INPUT_TOKENS}]},
                "request_id": self.request_id,
            },
            ensure_ascii=False,
        ).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def render(reply: Reply) -> Rendered:
    """The rendered reply, cached by shape (write mode aside)."""
    return _render(dataclasses.replace(reply, burst=False, slices=0))


@functools.cache
def _render(reply: Reply) -> Rendered:
    return Rendered(reply)


def simple_response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "request_id": str(uuid.uuid4())}).encode()


class Stats:
    requests = 0
    events = 0
    bytes = 0


class Request:
    __slots__ = ("body", "close", "headers", "method", "target")

    def __init__(
        self, method: str, target: str, headers: dict[str, str], body: bytes, close: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.close = close


def parse_request(buf: bytearray) -> tuple[Request, int] | None:
    """One complete request from the front of ``buf`` and the bytes it used, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _dechunk(buf, start)
        if decoded is None:
            return None
        body, used = decoded
    else:
        length = int(headers.get("content-length") or 0)
        if len(buf) < start + length:
            return None
        body, used = bytes(buf[start : start + length]), start + length
    connection = headers.get("connection", "").lower()
    close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    return Request(method, target, headers, body, close), used


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        parsed = parse_request(self.buf)
        if parsed is None:
            return
        request, used = parsed
        del self.buf[:used]
        self.busy = True
        asyncio.get_running_loop().create_task(self.respond(request))

    async def respond(self, request: Request) -> None:
        assert self.transport is not None
        try:
            await self.answer(request)
        except Exception as exc:
            print(f"server: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.transport.close()
            return
        self.busy = False
        if request.close:
            self.transport.close()
        elif self.buf and not self.closed:
            self.next_request()

    async def answer(self, request: Request) -> None:
        transport = self.transport
        assert transport is not None
        Stats.requests += 1
        path = request.target.split("?", 1)[0]
        if request.method == "GET" and path == "/__bench/stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stats = {
                "cpu_s": time.process_time(),
                "maxrss_kb": usage.ru_maxrss,
                "requests": Stats.requests,
                "events": Stats.events,
                "bytes": Stats.bytes,
            }
            transport.write(simple_response("200 OK", json.dumps(stats).encode()))
            return
        parts = path.rstrip("/").split("/")
        if len(parts) < 3 or parts[-1] != "completion" or parts[-3] != "apps":
            body = error_body("NotFound", f"no route for {path}")
            transport.write(simple_response("404 Not Found", body))
            return
        if request.method != "POST":
            body = error_body(
                "InvalidParameter", f"Request method '{request.method}' not supported."
            )
            transport.write(simple_response("400 Bad Request", body))
            return
        if not request.headers.get("authorization", "").startswith("Bearer "):
            body = error_body("InvalidApiKey", "Invalid API-key provided.")
            transport.write(simple_response("401 Unauthorized", body))
            return
        try:
            params = json.loads(request.body or b"{}").get("parameters") or {}
        except ValueError:
            body = error_body("InvalidParameter", "Required body invalid.")
            transport.write(simple_response("400 Bad Request", body))
            return
        rendered = render(Reply.from_params(params))
        if request.headers.get("x-dashscope-sse", "").lower() != "enable":
            transport.write(simple_response("200 OK", rendered.json_body()))
            return
        Stats.events += len(rendered.chunks) - 1
        transport.write(rendered.head)
        if params.get("bench_burst"):
            transport.write(rendered.joined())
            Stats.bytes += len(rendered.joined())
            return
        # One write per event, as the real service flushes per event (or per slice); wait
        # only when the transport's buffer is over its high-water mark (the client is
        # slower than us).
        slices = int(params.get("bench_slices") or 0)
        chunks = rendered.sliced(slices) if slices else rendered.chunks
        write = transport.write
        for chunk in chunks:
            if self.closed:
                return
            write(chunk)
            if self.writable is not None:
                await self.writable
        Stats.bytes += sum(map(len, chunks))


async def serve(host: str, port: int, lifetime: float, watch_stdin: bool = False) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, host, port, backlog=1024)
    actual = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": actual}), flush=True)
    stop = loop.create_future()

    def finish(*_: object) -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, finish)
    loop.add_signal_handler(signal.SIGINT, finish)
    loop.call_later(lifetime, finish)
    if watch_stdin:
        # Stop when the parent goes away (our stdin is its pipe).
        class Watcher(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                finish()

        await loop.connect_read_pipe(Watcher, sys.stdin)
    gc.freeze()
    async with server:
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=4 * 3600, help="seconds, then exit")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin closes (the parent died)"
    )
    parser.add_argument(
        "--prerender",
        choices=("none", "quick", "full"),
        default="none",
        help="render the replies of these scenarios before serving",
    )
    args = parser.parse_args(argv)
    if args.prerender != "none":
        for sc in scenarios(args.prerender == "quick").values():
            render(sc.reply)
            render(sc.warmup)
            if sc.reply.slices:
                render(sc.reply).sliced(sc.reply.slices)
    asyncio.run(serve(args.host, args.port, args.lifetime, args.watch_stdin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
