"""Which failures a turn retries, and how long it waits before the next attempt.

A turn is retried only before any event arrived: re-sending later would duplicate output
and cost. Retried: connection failures that cannot have reached the service (refused,
reset, a stale pooled connection, a connect timeout) and HTTP 429, 500, 502, 503, 504.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import aiohttp

__all__ = ["RETRY_STATUSES", "backoff", "retry_after", "retryable_connection_error"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0


def retryable_connection_error(exc: BaseException) -> bool:
    """True for a connection failure that is safe to retry."""
    # A timeout after the request was sent may mean the service is already working
    # on it: retrying would pay twice. A certificate or TLS failure will fail the same
    # way again. Connect timeouts and refused or dropped connections are safe.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(
        exc, (aiohttp.SocketTimeoutError, aiohttp.ClientSSLError)
    )


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    # The exponent is clamped: a float overflows near 2**1024, and the cap wins long before.
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 32)))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP
    date), clamped to [0, 60]; ``None`` when neither says anything usable."""
    seconds = _number(headers.get("retry-after-ms"))
    if seconds is not None:
        seconds /= 1000
    else:
        value = headers.get("Retry-After")
        if value is None:
            return None
        seconds = _number(value)
        if seconds is None:
            seconds = _until(value)
            if seconds is None:
                return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _until(value: str) -> float | None:
    """Seconds from now until the HTTP date ``value``; ``None`` if it is not one."""
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            # RFC 5322 "-0000": UTC, with no claim about local time.
            when = when.replace(tzinfo=dt.timezone.utc)
        return (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        # A year of twenty digits overflows the datetime constructor.
        return None
