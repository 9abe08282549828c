"""A local, protocol-faithful Bailian app-completion server for tests and demos.

:class:`BailianSimulator` serves ``POST {base}/apps/{app_id}/completion`` on loopback the
way the real service does (see the protocol reference): the same SSE framing byte for
byte (``id:``/``event:``/``:HTTP_STATUS/200``/``data:`` with no space after the colons),
``finish_reason`` as the *string* ``"null"`` until the final ``"stop"``, cumulative or
incremental text, server-side ``session_id`` memory, citations and thoughts shaped like
the service's, DashScope error bodies, and the in-band ``HTTP 200`` + ``event:error``
answer to an unknown app id. :class:`Fault` injects the failures a client must survive:
HTTP errors, in-stream errors, cut and truncated streams, stalls, one-byte drips,
malformed and oversized events, and HTML pages from a proxy. Every request is recorded
as a :class:`SimRequest`.

It needs nothing beyond aiohttp and starts in a few milliseconds, so every test can have
its own::

    import aiohttp
    from tyqw.testing import BailianSimulator, Fault

    async def test_retry_after_is_sent() -> None:
        async with BailianSimulator() as sim, aiohttp.ClientSession() as http:
            sim.inject(Fault.http(429, retry_after=2))
            async with http.post(
                sim.url_for(),
                json={"input": {"prompt": "hi"}},
                headers={"Authorization": f"Bearer {sim.api_key}"},
            ) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "2"
                assert (await resp.json())["code"] == "Throttling"

The intended use with tyqw itself::

    from tyqw import Session

    async with BailianSimulator() as sim:
        async with Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url, state_dir=tmp_path
        ) as s:
            reply = await s.send("hi")

Where the reference is unsure, the simulator takes the tolerant reading and says so: an
unknown or expired ``session_id`` silently starts a new conversation under a newly minted
id, and the stream's connection is kept alive after the final event (the response ends
with a normal chunked terminator) so clients can reuse it.

The service forgets a conversation after an hour without use. ``advance_clock(seconds)``
moves the clock by which tyqw and every simulator in the process measure that, for the
length of a ``with`` block, so a test of expiry takes no time::

    with advance_clock(3601):
        reply = await s.send("我叫什么名字？")   # the stored id is an hour old

This module is the public face; the simulator itself lives in ``tyqw._simulator``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import _clock
from ._simulator import DEFAULT_APP_ID as DEFAULT_APP_ID
from ._simulator import BailianSimulator, Fault, SimRequest, default_reply, run_offline
from ._simulator import FaultKind as FaultKind
from ._simulator import ReplyFunc as ReplyFunc

__all__ = [
    "BailianSimulator",
    "Fault",
    "SimRequest",
    "advance_clock",
    "default_reply",
    "run_offline",
]


@contextlib.contextmanager
def advance_clock(seconds: float) -> Iterator[None]:
    """Within the block, tyqw and every simulator in this process see the time
    ``seconds`` later than it is; afterwards the clock is back where it was.

    It is the clock conversation lifetimes are measured by: how long a stored
    conversation has been idle (``tyqw.Expiry``) and how long a simulator keeps one
    (``session_ttl``). Blocks nest, adding up. Process-wide, so for tests, not for
    concurrent programs::

        with advance_clock(3601):             # an hour and a second later
            await session.send("我叫什么名字？")  # tyqw resends the transcript
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    _clock.advance(seconds)
    try:
        yield
    finally:
        _clock.advance(-seconds)


# Shown as tyqw.testing.Fault and so on in reprs and help(), where users import them from.
for _public in (BailianSimulator, Fault, SimRequest, advance_clock, default_reply, run_offline):
    _public.__module__ = __name__
del _public
