"""The per-user rate limit: in memory for one process, in Redis for many workers.

Both use GCRA (the generic cell rate algorithm, a token bucket kept as one number): a
user may make ``per_minute`` turns at once, then one every ``60 / per_minute`` seconds.
The one number per user is a "theoretical arrival time"; a turn is allowed when it is
no further ahead of now than the burst allows. In Redis that check and the update are
one Lua script, atomic across any number of relay workers, and Redis's own clock is
the only clock, so workers whose clocks disagree still share one limit.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

__all__ = ["LimitUnavailable", "MemoryRateLimit", "RateLimit", "RedisRateLimit"]


class LimitUnavailable(RuntimeError):
    """The shared rate limit could not be checked (Redis unreachable): refuse the turn."""


class RateLimit(Protocol):
    """``await hit(user)``: None if the turn may go ahead, else seconds to wait."""

    async def hit(self, user: str) -> float | None: ...

    async def aclose(self) -> None: ...


class MemoryRateLimit:
    """GCRA in a dict: for a single relay process."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute
        self.tolerance = 60.0 - self.interval  # how far ahead a burst may run
        self._arrival: dict[str, float] = {}

    async def hit(self, user: str) -> float | None:
        now = time.monotonic()
        arrival = max(self._arrival.get(user, now), now)
        ahead = arrival - now
        if ahead > self.tolerance:
            return ahead - self.tolerance
        self._arrival[user] = arrival + self.interval
        if len(self._arrival) > 10_000:  # forget users whose bucket is full again
            self._arrival = {u: t for u, t in self._arrival.items() if t > now}
        return None

    async def aclose(self) -> None:
        self._arrival.clear()


# KEYS[1]: the user's key. ARGV: interval and tolerance in milliseconds.
# Returns -1 when allowed, else the milliseconds to wait.
_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local arrival = tonumber(redis.call('GET', KEYS[1]) or now)
if arrival < now then arrival = now end
if arrival - now > tolerance then return arrival - now - tolerance end
arrival = arrival + interval
redis.call('SET', KEYS[1], arrival, 'PX', arrival - now)
return -1
"""


class RedisRateLimit:
    """GCRA in Redis (one key per user, expiring when the bucket is full again).

    Needs redis-py (``pip install redis``) and Redis 5 or later.
    """

    def __init__(self, url: str, per_minute: int, *, key_prefix: str = "tyqw:relay:rate:") -> None:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ImportError("a redis:// store needs redis-py: pip install 'redis>=5'") from None
        self._errors = (redis.RedisError, OSError)
        self._client: Any = cast(Any, redis).from_url(
            url, socket_connect_timeout=5, socket_timeout=5
        )
        self._script = self._client.register_script(_GCRA)
        self._interval_ms = max(1, round(60_000 / per_minute))
        self._tolerance_ms = 60_000 - self._interval_ms
        self._prefix = key_prefix

    async def hit(self, user: str) -> float | None:
        try:
            wait = int(
                await self._script(
                    keys=[self._prefix + user], args=[self._interval_ms, self._tolerance_ms]
                )
            )
        except self._errors as exc:
            raise LimitUnavailable(f"cannot reach Redis for the rate limit: {exc}") from exc
        return None if wait < 0 else wait / 1000

    async def aclose(self) -> None:
        close = getattr(self._client, "aclose", None) or self._client.close
        await close()
