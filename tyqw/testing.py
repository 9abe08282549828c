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

This module is the public face; the simulator itself lives in ``tyqw._simulator``.
"""

from __future__ import annotations

from ._simulator import DEFAULT_APP_ID as DEFAULT_APP_ID
from ._simulator import BailianSimulator, Fault, SimRequest, default_reply, run_offline
from ._simulator import FaultKind as FaultKind
from ._simulator import ReplyFunc as ReplyFunc

__all__ = ["BailianSimulator", "Fault", "SimRequest", "default_reply", "run_offline"]

# Shown as tyqw.testing.Fault and so on in reprs and help(), where users import them from.
for _public in (BailianSimulator, Fault, SimRequest, default_reply, run_offline):
    _public.__module__ = __name__
del _public
