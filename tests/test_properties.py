"""Property-based tests at the Session level, over real sockets.

How the bytes of a valid stream are cut into TCP reads must never change the messages.
(The decoder-level properties, including arbitrary bytes never raising anything but
tyqw's own errors, live in test_sse.py.) Example counts are small: each example is a
real exchange over loopback.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tyqw import Session
from tyqw.testing import BailianSimulator, Fault

from .helpers import RawServerFactory, bailian_stream, raw_session, sim_session

socket_examples = settings(
    max_examples=20,
    deadline=None,
    # Each example starts its own server from the function-scoped factory on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

_pieces = st.lists(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),
    min_size=1,
    max_size=5,
)

Seen = list[tuple[str, str, str | None]]


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def expected_messages(pieces: list[str]) -> Seen:
    text = ""
    expected: Seen = []
    for piece in pieces:
        text += piece
        expected.append((piece, text, None))
    expected.append(("", text, "stop"))
    return expected


async def seen(session: Session, **options: Any) -> Seen:
    return [(m.delta, m.text, m.finish_reason) async for m in session.stream("hi", **options)]


@socket_examples
@given(
    pieces=_pieces,
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    keepalives=st.booleans(),
    bom=st.booleans(),
    data=st.data(),
)
async def test_any_split_of_a_valid_stream_gives_the_same_messages(
    raw_server: RawServerFactory,
    state_dir: Path,
    pieces: list[str],
    newline: bytes,
    keepalives: bool,
    bom: bool,
    data: st.DataObject,
) -> None:
    """Any line ending, keep-alives or BOM, cut anywhere (multibyte characters and CRLF
    included): the Session yields exactly the messages the pieces describe.
    """
    stream = bailian_stream(pieces)
    if keepalives:
        stream = b":\n\n" + stream.replace(b"\n\n", b"\n\n: ping\n\n")
    stream = stream.replace(b"\n", newline)
    if bom:
        stream = b"\xef\xbb\xbf" + stream
    cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12), label="cuts")
    chunks: list[bytes | float] = []
    for chunk in split_at(stream, cuts):
        chunks += [chunk, 0.001]  # a pause, so that each piece tends to be its own read
    server = await raw_server(chunks)
    async with raw_session(server.base_url, state_dir) as session:
        assert await seen(session) == expected_messages(pieces)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=24),
    after=st.integers(0, 3),
    incremental=st.booleans(),
)
async def test_a_dripped_reply_equals_the_whole_reply(
    sim: BailianSimulator, state_dir: Path, text: str, after: int, incremental: bool
) -> None:
    """The simulator's drip (one byte per write) changes nothing, in either text mode."""
    sim.reply = lambda prompt, history: text
    async with sim_session(sim, state_dir) as session:
        whole = await seen(session, incremental_output=incremental)
        sim.inject(Fault.drip(after=after))
        dripped = await seen(session, incremental_output=incremental)
    assert dripped == whole
    assert whole[-1][1] == text and whole[-1][2] == "stop"
