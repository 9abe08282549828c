"""Clients that stall: a request body that never arrives, a reader that stops reading.

Each holds something a real user needs (a connection, a turn, the user's conversation
lock); each is dropped within the relay's bound, over real sockets that stall.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tyqw.testing import BailianSimulator

from .relay_helpers import (
    BOUND,
    SSE_HEADERS,
    Relay,
    auth,
    body,
    connect,
    post,
    post_head,
    until_closed,
)


def head(relay: Relay, length: int, **headers: str) -> bytes:
    return post_head(relay, "/" + relay.url().split("/", 3)[3], length, **headers)


async def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(
    sim: BailianSimulator,
) -> None:
    """A client that announces a body and stops sending it gets 408 RequestTimeOut
    within body_timeout and its connection is closed; nothing reaches the service."""
    async with Relay(sim, body_timeout=0.5) as relay:
        reader, writer = await connect(relay)
        writer.write(head(relay, 1000) + b'{"input":{"prompt":"')
        answer = await until_closed(reader)
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408 ")
    error = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert error["code"] == "RequestTimeOut" and "0.5s" in error["message"]
    assert sim.requests == []


async def test_a_client_that_stops_reading_is_dropped_and_its_conversation_unlocked(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A client that stops reading a long streamed answer: within send_timeout the relay
    drops it, closes the upstream request, and the user's next turn runs at once."""
    arrived = asyncio.Event()

    def reply(prompt: str, history: list[tuple[str, str]]) -> str:
        arrived.set()
        return "x" * 200_000  # cumulative text: some 20 MB on the wire, far past any buffer

    sim.reply = reply
    sim.chunk_size = 1000
    async with Relay(sim, send_timeout=0.5) as relay:
        reader, writer = await connect(relay, receive_buffer=4096)
        payload = json.dumps(body("tell me everything")).encode()
        writer.write(head(relay, len(payload), **SSE_HEADERS) + payload)
        await asyncio.wait_for(arrived.wait(), BOUND)
        upstream = sim.requests[-1]
        await asyncio.wait_for(upstream.done.wait(), BOUND)  # the relay gave the turn up
        assert upstream.disconnected
        sim.reply = lambda prompt, history: "short"
        sim.chunk_size = 4
        answer = await asyncio.wait_for(post(http, relay.url(), body("hello"), auth()), BOUND)
        assert answer.status == 200 and answer.json["output"]["text"] == "short"
        await until_closed(reader)  # what it had not read, then the end
        writer.close()
