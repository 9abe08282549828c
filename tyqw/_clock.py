"""The clock that conversation lifetimes are measured by, on both sides of the wire.

A Session measures how long its conversation has been idle (``Expiry``), and the
simulator how long it has kept one, with these two functions. Tests move both forward
at once with ``tyqw.testing.advance_clock()``, so an hour of idleness takes no time;
nothing else ever moves them.
"""

from __future__ import annotations

import time

__all__ = ["monotonic", "now"]

_ahead = 0.0  # seconds added by tyqw.testing.advance_clock(); 0 outside tests


def now() -> float:
    """Unix time, as stored with a conversation (comparable across processes)."""
    return time.time() + _ahead


def monotonic() -> float:
    """A clock for durations within one process."""
    return time.monotonic() + _ahead


def advance(seconds: float) -> None:
    """Move the clock ``seconds`` forward (negative: back); for ``tyqw.testing`` only."""
    global _ahead
    _ahead += seconds
