"""Context that survives the service forgetting a conversation: once the stored id is
known to be past the service's lifetime (idle, or at its round limit), the next turn
sends the transcript's recent exchanges as ``input.messages`` instead of the dead id,
and the id the service answers with carries on. End to end against the simulator,
whose clock ``tyqw.testing.advance_clock()`` moves together with tyqw's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tyqw
from tyqw import Expiry, Session
from tyqw.stores import MemoryStore, Store
from tyqw.testing import BailianSimulator, advance_clock

from .helpers import sim_session

HOUR = 3600.0


@pytest.fixture
def store(transcript_store: Store) -> Store:
    """Each kind of store: local and lazily written (file, memory), shared (redis, a user's)."""
    return transcript_store


def on(sim: BailianSimulator, store: Store, **kwargs: Any) -> Session:
    return sim_session(sim, None, store=store, **kwargs)  # type: ignore[arg-type]


def sent_input(sim: BailianSimulator) -> dict[str, Any]:
    """The ``input`` of the last request the simulator received."""
    body = sim.requests[-1].body
    assert isinstance(body, dict)
    return dict(body["input"])


async def test_after_an_idle_hour_the_transcript_is_sent_and_the_name_remembered(
    sim: BailianSimulator, store: Store
) -> None:
    """An hour idle: the next turn sends the exchanges as messages, not the dead id, and
    the reply (and the turn after it, on the new id) still knows the name."""
    async with on(sim, store, name="alice") as session:
        first = await session.send("你好，我叫小明")
        assert first.session_id is not None
        with advance_clock(HOUR + 1):
            assert sim.history(first.session_id) is None  # the simulator forgot it
            reply = await session.send("我叫什么名字？")
            sent = sent_input(sim)
            assert "session_id" not in sent
            assert sent["messages"] == [
                {"role": "user", "content": "你好，我叫小明"},
                {"role": "assistant", "content": first.text},
            ]
            assert reply.text.startswith("你叫小明")
            assert reply.session_id not in (None, first.session_id)
            assert session.session_id == reply.session_id
            # The new id carries on: sent as it is, and it remembers.
            again = await session.send("我的名字是什么？")
            assert sent_input(sim).get("session_id") == reply.session_id
            assert "messages" not in sent_input(sim)
            assert again.text.startswith("你叫小明")
            assert again.session_id == reply.session_id
        history = await session.history()
    assert [e.prompt for e in history] == ["你好，我叫小明", "我叫什么名字？", "我的名字是什么？"]


async def test_a_conversation_idle_less_than_the_limit_keeps_its_id(
    sim: BailianSimulator, store: Store
) -> None:
    """Idle a little under the limit: the stored id is sent, without messages."""
    async with on(sim, store) as session:
        first = await session.send("my name is Ada")
        with advance_clock(HOUR - 60):
            reply = await session.send("what's my name?")
        assert sent_input(sim) == {"prompt": "what's my name?", "session_id": first.session_id}
        assert reply.session_id == first.session_id
        assert reply.text.startswith("Your name is Ada")


async def test_another_session_later_finds_the_conversation_expired(
    sim: BailianSimulator, tmp_path: Path
) -> None:
    """A script that comes back after an hour (a new Session on the same folder) reads
    the time of the last turn from the store and resends the transcript."""
    state_dir = tmp_path / "state"
    async with sim_session(sim, state_dir) as session:
        await session.send("my name is Ada")
        await session.send("hello")  # within the write interval: written at aclose()
    with advance_clock(2 * HOUR):
        async with sim_session(sim, state_dir) as later:
            reply = await later.send("what's my name?")
    messages = sent_input(sim)["messages"]
    assert [m["content"] for m in messages[::2]] == ["my name is Ada", "hello"]
    assert reply.text.startswith("Your name is Ada")


async def test_at_the_round_limit_the_recent_exchanges_are_resent(
    sim: BailianSimulator, store: Store
) -> None:
    """At the service's round limit the next turn resends the ``resend`` most recent
    exchanges; what they hold is remembered, what is older is not sent."""
    sim.max_rounds = 4
    async with on(sim, store, expiry=Expiry(rounds=4, resend=2)) as session:
        for prompt in ("one", "my name is Ada", "three"):
            await session.send(prompt)
        fourth = await session.send("four")
        assert "messages" not in sent_input(sim)
        reply = await session.send("what's my name?")
        messages = sent_input(sim)["messages"]
        assert "session_id" not in sent_input(sim)
        assert [m["content"] for m in messages[::2]] == ["three", "four"]
        assert reply.session_id != fourth.session_id
        # The name was told three turns back, beyond resend=2: gone, as it would be.
        assert reply.text.startswith("You haven't told me your name")


async def test_expiry_false_sends_the_stored_id_whatever_its_age(
    sim: BailianSimulator, store: Store
) -> None:
    """expiry=False: the dead id is sent as before, and the service has forgotten."""
    async with on(sim, store, expiry=False) as session:
        first = await session.send("my name is Ada")
        with advance_clock(HOUR + 1):
            reply = await session.send("what's my name?")
        assert sent_input(sim) == {"prompt": "what's my name?", "session_id": first.session_id}
        assert reply.text.startswith("You haven't told me your name")


async def test_without_a_transcript_there_is_nothing_to_resend(
    sim: BailianSimulator, store: Store
) -> None:
    """history=False keeps no transcript: the stored id is sent, as without expiry."""
    async with on(sim, store, history=False) as session:
        first = await session.send("my name is Ada")
        with advance_clock(HOUR + 1):
            await session.send("what's my name?")
        assert sent_input(sim) == {"prompt": "what's my name?", "session_id": first.session_id}


async def test_a_callers_own_messages_win(sim: BailianSimulator, store: Store) -> None:
    """A turn sent with messages= keeps them, expired conversation or not."""
    mine = [{"role": "user", "content": "my name is Bo"}, {"role": "assistant", "content": "Hi"}]
    async with on(sim, store) as session:
        await session.send("my name is Ada")
        with advance_clock(HOUR + 1):
            reply = await session.send("what's my name?", messages=mine)
        assert sent_input(sim)["messages"] == mine
        assert reply.text.startswith("Your name is Bo")


def test_expiry_settings_are_checked() -> None:
    """Expiry's defaults are the service's limits; bad values are refused at once."""
    assert Expiry() == Expiry(idle=3600.0, rounds=50, resend=20)
    assert tyqw.Expiry is Expiry
    for bad in ({"idle": -1.0}, {"idle": float("nan")}, {"rounds": 0}, {"resend": True}):
        with pytest.raises(ValueError, match="Expiry"):
            Expiry(**bad)
    with pytest.raises(TypeError, match="expiry must be"):
        Session("app", api_key="sk-test", store=MemoryStore(), expiry="1h")  # type: ignore[arg-type]


def test_advance_clock_moves_the_simulator_and_comes_back() -> None:
    """advance_clock() adds up when nested and is undone when the block ends."""
    from tyqw import _clock

    start = _clock.now()
    with advance_clock(100):
        with advance_clock(50):
            assert _clock.now() - start >= 150
        assert 100 <= _clock.now() - start < 150
    assert _clock.now() - start < 50
