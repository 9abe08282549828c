"""Several relay workers, one store: a user's conversation is the same on every worker.

Each worker is its own ``create_app`` on its own port (as separate processes behind a
load balancer would be), all in front of one simulator; the Redis tests share one real
``redis-server`` through ``store="redis://..."``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tyqw.relay import create_app
from tyqw.testing import BailianSimulator

from .helpers import DictStore
from .relay_helpers import ALICE, BOB, BOUND, SSE_HEADERS, Relay, auth, body, post


def connected_clients(redis_process: Any) -> int:
    info = redis_process.command("INFO", "clients").decode()
    return int(info.split("connected_clients:")[1].split()[0])


async def test_a_users_next_turn_on_another_worker_continues_the_conversation(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str, redis_process: Any
) -> None:
    """Turn one on worker A, turn two (streamed) on worker B with the id A answered: one
    conversation on the service holding both prompts, and B's reply knows the name."""
    before = connected_clients(redis_process)
    async with Relay(sim, store=redis_url) as one, Relay(sim, store=redis_url) as two:
        first = await post(http, one.url(), body("my name is Ada"), auth())
        session_id = first.json["output"]["session_id"]
        second = await post(
            http, two.url(), body("what's my name?", session_id), auth(**SSE_HEADERS)
        )
        third = await post(http, one.url(), body("and again?", session_id), auth())
    [last] = [e for e in second.events if e.event == "result"][-1:]
    assert '"session_id":"' + session_id in last.data and "Ada" in last.data
    assert third.status == 200 and third.json["output"]["session_id"] == session_id
    history = sim.history(session_id)
    assert history is not None
    assert [prompt for prompt, _ in history] == ["my name is Ada", "what's my name?", "and again?"]
    # Each relay closed the Redis client it made.
    assert connected_clients(redis_process) == before


async def test_a_new_conversation_on_one_worker_is_the_users_conversation_on_all(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """After B starts a new conversation (no session_id), A refuses the old id and
    continues the new one; the old conversation gets nothing more."""
    async with Relay(sim, store=redis_url) as one, Relay(sim, store=redis_url) as two:
        old = (await post(http, one.url(), body("my name is Ada"), auth())).json
        new = (await post(http, two.url(), body("hello"), auth())).json
        assert new["output"]["session_id"] != old["output"]["session_id"]
        sent = len(sim.requests)
        stale = await post(
            http, one.url(), body("what's my name?", old["output"]["session_id"]), auth()
        )
        assert stale.status == 400 and stale.json["code"] == "InvalidParameter"
        assert "current conversation" in stale.json["message"]
        assert len(sim.requests) == sent
        again = await post(
            http, one.url(), body("what's my name?", new["output"]["session_id"]), auth()
        )
    assert again.status == 200
    assert "haven't told me your name" in again.json["output"]["text"]
    assert [p for p, _ in sim.history(old["output"]["session_id"]) or []] == ["my name is Ada"]
    assert [p for p, _ in sim.history(new["output"]["session_id"]) or []] == [
        "hello",
        "what's my name?",
    ]


async def test_users_stay_apart_across_workers(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """Alice's id is refused for Bob on the other worker too, and Bob's turns there do
    not touch Alice's conversation."""
    async with Relay(sim, store=redis_url) as one, Relay(sim, store=redis_url) as two:
        alice = (await post(http, one.url(), body("my name is Alice"), auth(ALICE))).json
        alice_id = alice["output"]["session_id"]
        bob = await post(http, two.url(), body("what's my name?", alice_id), auth(BOB))
        bob_own = await post(http, two.url(), body("my name is Bob"), auth(BOB))
        back = await post(http, one.url(), body("what's my name?", alice_id), auth(ALICE))
    assert bob.status == 400
    assert bob_own.json["output"]["session_id"] != alice_id
    assert "Alice" in back.json["output"]["text"]


class GatedStore(DictStore):
    """A user-written store (a dict and asyncio locks) that tells when a turn waits for
    a conversation another holder has locked."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()
        self.closed = False

    @asynccontextmanager
    async def lock(self, app_id: str, name: str) -> AsyncIterator[None]:
        lock = self.locks[app_id, name]
        if lock.locked():
            self.waiting.set()
        async with lock:
            yield

    async def aclose(self) -> None:
        self.closed = True


async def test_the_id_is_checked_under_the_lock_so_a_change_by_another_worker_cannot_slip_by(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A turn that continues X waits while another worker holds the conversation and
    starts a new one: it is then refused and sends nothing, instead of carrying the
    client's prompt into a conversation the client never named."""
    store = GatedStore()
    async with Relay(sim, store=store) as one, Relay(sim, store=store) as two:
        first = (await post(http, one.url(), body("my name is Ada"), auth())).json
        session_id = first["output"]["session_id"]
        sent = len(sim.requests)
        key = (sim.app_id, "alice")
        async with store.lock(*key):  # worker B, in the middle of a turn
            late = asyncio.ensure_future(
                post(http, two.url(), body("what's my name?", session_id), auth())
            )
            await asyncio.wait_for(store.waiting.wait(), BOUND)
            store.records[key] = {**store.records[key], "session_id": "b" * 32}  # its new one
        answer = await late
        assert answer.status == 400 and "current conversation" in answer.json["message"]
        assert len(sim.requests) == sent
        store.records[key] = {**store.records[key], "session_id": session_id}
        back = await post(http, two.url(), body("what's my name?", session_id), auth())
    assert back.status == 200 and "Ada" in back.json["output"]["text"]
    assert not store.closed  # a store passed in belongs to the caller


async def test_the_store_unreachable_fails_the_turn_before_anything_is_sent(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str, redis_process: Any
) -> None:
    """With the conversations' Redis down a turn is 503 ServiceUnavailable (in-band on a
    stream) and never reaches the service: no silent new conversation."""
    async with Relay(sim, store=redis_url) as relay:
        first = (await post(http, relay.url(), body("my name is Ada"), auth())).json
        redis_process.stop()
        sent = len(sim.requests)
        continued = await post(
            http, relay.url(), body("what's my name?", first["output"]["session_id"]), auth()
        )
        new = await post(http, relay.url(), body("hello"), auth(**SSE_HEADERS))
    assert continued.status == 503 and continued.json["code"] == "ServiceUnavailable"
    [error] = new.events
    assert (error.event, error.comment) == ("error", "HTTP_STATUS/503")
    assert len(sim.requests) == sent


@pytest.mark.parametrize(
    ("store", "error", "says"),
    [
        pytest.param(42, TypeError, "not int", id="not-a-store"),
        pytest.param("", ValueError, "redis:// URL", id="empty"),
    ],
)
def test_a_store_the_relay_cannot_use_is_refused_when_built(
    store: Any, error: type[Exception], says: str
) -> None:
    """create_app(store=) with something that is no store fails at once, saying what
    it takes."""
    with pytest.raises(error, match=says):
        create_app(["app"], api_key="sk-test", allow_anonymous=True, store=store)


def test_a_redis_url_the_store_cannot_parse_is_refused_when_built() -> None:
    """A malformed redis:// URL fails create_app() at once, not the relay's start."""
    with pytest.raises(ValueError, match="invalid Redis URL"):
        create_app(
            ["app"], api_key="sk-test", allow_anonymous=True, store="redis://localhost:port/0"
        )
