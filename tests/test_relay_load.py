"""Load, bounded and on loopback: 200 clients streaming through the relay at once."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from tyqw.testing import BailianSimulator, default_reply

from .relay_helpers import SSE_HEADERS, Relay, body, events

CLIENTS = 200


async def test_200_concurrent_clients_each_get_their_own_whole_replies(
    sim: BailianSimulator,
) -> None:
    """200 users stream two turns each through one relay, all at once: every reply is
    whole (ids 1..n, ending with stop), each user's second turn remembers that user's
    own name, and no two users share a conversation."""
    in_flight: list[int] = []

    def reply(prompt: str, history: list[tuple[str, str]]) -> str:
        in_flight.append(sum(not r.done.is_set() for r in sim.requests))
        return default_reply(prompt, history)

    sim.reply = reply
    sim.delay = 0.01  # each reply streams for a while, so the clients overlap

    def authenticate(request: web.Request) -> str | None:
        return request.headers.get("Authorization", "").removeprefix("Bearer user-") or None

    async def converse(http: aiohttp.ClientSession, url: str, i: int) -> tuple[str, str, str]:
        headers = {
            "Authorization": f"Bearer user-{i}",
            "Content-Type": "application/json",
            **SSE_HEADERS,
        }
        texts: list[str] = []
        session_ids: list[str] = []
        session_id = None
        for prompt in (f"my name is U{i}", "what's my name?"):
            payload = json.dumps(body(prompt, session_id, incremental_output=True))
            async with http.post(url, data=payload, headers=headers) as response:
                assert response.status == 200
                sse = events(await response.read())
            assert [e.id for e in sse] == [str(n) for n in range(1, len(sse) + 1)]
            outputs = [json.loads(e.data)["output"] for e in sse]
            assert {e.event for e in sse} == {"result"}
            assert [o["finish_reason"] for o in outputs][-1] == "stop"
            texts.append("".join(o["text"] for o in outputs))
            session_ids.extend(o["session_id"] for o in outputs)
            session_id = outputs[0]["session_id"]
        assert set(session_ids) == {session_id}
        assert session_id is not None
        return texts[0], texts[1], session_id

    async with (
        Relay(sim, authenticate=authenticate) as relay,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        results = await asyncio.wait_for(
            asyncio.gather(*(converse(http, relay.url(), i) for i in range(CLIENTS))), 120
        )
    for i, (first, second, _) in enumerate(results):
        assert f"U{i}!" in first
        assert second == f"Your name is U{i}. You told me earlier in this conversation."
    assert len({session_id for _, _, session_id in results}) == CLIENTS
    assert len(sim.requests) == 2 * CLIENTS
    assert max(in_flight) > CLIENTS // 2, "the clients did not run at the same time"
