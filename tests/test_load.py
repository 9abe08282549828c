"""Load and soak, bounded and on loopback: many Sessions at once, and many turns on one.

Sizes are chosen to finish in a few seconds on a 2-core machine while still showing
what they are meant to show: no cross-talk under concurrency, and no growth in
descriptors, connections, tasks or memory over thousands of turns.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
import weakref
from pathlib import Path

import tyqw
from tyqw import Reply, Session
from tyqw._turn import Turn
from tyqw.testing import BailianSimulator

from .helpers import SessionFactory, sim_session

SESSIONS = 300
TURNS = 2000
WARM_UP = 200
MEMORY_GROWTH_LIMIT = 256 * 1024
"""Bytes still allocated after the soak (Python objects, via tracemalloc). A leak of
one ``Reply`` per turn alone would be several times this."""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_300_concurrent_sessions_three_turns_each(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """300 Sessions with distinct names, three turns each, all at once: every reply
    complete, no errors, and each conversation remembers its own name.
    """
    sessions = [sim_session(sim, state_dir, name=f"user-{i}") for i in range(SESSIONS)]
    errors: list[tyqw.TyqwError] = []

    async def converse(i: int, session: Session) -> list[Reply]:
        session.on("error", errors.append)
        return [
            await session.send(f"my name is U{i}"),
            await session.send("hello"),
            await session.send("what's my name?"),
        ]

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(converse(i, s) for i, s in enumerate(sessions))), 60
        )
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))
    assert errors == []
    for i, replies in enumerate(results):
        assert all(r.error is None and r.finish_reason == "stop" and r.text for r in replies)
        assert len({r.session_id for r in replies}) == 1
        assert f"U{i}." in replies[2].text  # its own name, nobody else's
    assert len({replies[0].session_id for replies in results}) == SESSIONS
    assert len(sim.requests) == 3 * SESSIONS
    stored = {c.name: c.session_id for c in tyqw.stored_conversations(state_dir)}
    assert stored == {f"user-{i}": replies[0].session_id for i, replies in enumerate(results)}


async def test_2000_sequential_turns_stay_flat(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """2,000 turns on one Session: one TCP connection throughout, and descriptors,
    tasks and memory do not grow after a warm-up.
    """
    sim.chunk_size = 16  # fewer, larger events: the point is turns, not event count
    session = make_session()

    async def turn() -> None:
        reply = await session.send("hello there")
        assert reply.finish_reason == "stop" and reply.error is None
        sim.requests.clear()  # the simulator's own record of requests is not ours

    for _ in range(WARM_UP):
        await turn()
    gc.collect()
    fds = open_fds()
    tasks = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        for _ in range(TURNS - WARM_UP):
            await turn()
        gc.collect()
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sim.connections == 1
    assert open_fds() == fds
    assert len(asyncio.all_tasks()) == tasks
    assert grown < MEMORY_GROWTH_LIMIT, f"{grown} bytes still allocated after the soak"


async def test_finished_turns_are_not_kept_alive(make_session: SessionFactory) -> None:
    """Once send() returns or a stream ends, nothing keeps the turn (its request, reply
    and text) in memory: the timers a turn leaves in the event loop hold no reference."""
    earlier = weakref.WeakSet(o for o in gc.get_objects() if isinstance(o, Turn))
    session = make_session()
    for _ in range(10):
        await session.send("hello there")
        async for _message in session.stream("hello there"):
            pass
    del _message
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Turn) and o not in earlier] == []
