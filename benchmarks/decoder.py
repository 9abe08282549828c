"""The SSE decoder alone: µs per event when reads align with events and when they do not.

    python benchmarks/decoder.py               # 20,000 events, 7 interleaved repetitions
    python benchmarks/decoder.py --reps 3 --events 5000 --json

Feeds the bytes of the ``single`` scenario's reply (the same frames ``server.py`` writes,
without the HTTP chunk framing) straight into ``tyqw.sse.SSEDecoder``, configured as a
turn configures it, in three shapes of read, each two ways:

``4 KiB`` / ``64 KiB``  misaligned: fixed slices of that size, which end inside events;
                        aligned: as many whole events as fit in that size
``random``              misaligned: slices of random sizes (1 B to 16 KiB, seeded);
                        aligned: the same cuts moved forward to the next event boundary

For each shape it prints the median µs/event of both and their ratio (misaligned /
aligned), paired within each repetition. The decoder keeps its whole-block fast path
whatever the read boundaries when the ratio is near 1. Needs only tyqw importable (the
repo's ``.venv`` or ``benchmarks/.env``); nothing else, no server.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import Reply
from server import Rendered

from tyqw.sse import SSEDecoder

Chunks = list[bytes]


def aligned(events: list[bytes], size: int) -> Chunks:
    """Whole events, as many as fit in ``size`` bytes (at least one) per chunk."""
    chunks: Chunks = []
    batch: list[bytes] = []
    used = 0
    for event in events:
        if batch and used + len(event) > size:
            chunks.append(b"".join(batch))
            batch, used = [], 0
        batch.append(event)
        used += len(event)
    if batch:
        chunks.append(b"".join(batch))
    return chunks


def fixed(stream: bytes, size: int) -> Chunks:
    """Slices of ``size`` bytes, wherever they fall."""
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def cut(stream: bytes, cuts: list[int]) -> Chunks:
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def random_cuts(stream: bytes, seed: int, largest: int = 16 * 1024) -> list[int]:
    rng = random.Random(seed)
    cuts, at = [], 0
    while True:
        at += rng.randint(1, largest)
        if at >= len(stream):
            return cuts
        cuts.append(at)


def to_boundaries(cuts: list[int], boundaries: list[int]) -> list[int]:
    """Each cut moved forward to the next event boundary (duplicates dropped)."""
    out: list[int] = []
    j = 0
    for c in cuts:
        while boundaries[j] < c:
            j += 1
        if not out or boundaries[j] != out[-1]:
            out.append(boundaries[j])
    return out


def make_decoder() -> Callable[[], SSEDecoder]:
    """A factory for decoders configured as a turn configures them."""
    params = inspect.signature(SSEDecoder).parameters
    kwargs = {"implicit_dispatch": True} if "implicit_dispatch" in params else {}
    return lambda: SSEDecoder(**kwargs)


def run_once(new: Callable[[], SSEDecoder], chunks: Chunks, expected: int) -> float:
    """CPU seconds to decode ``chunks`` with a new decoder (the event count is checked)."""
    gc.collect()
    started = time.process_time()
    decoder = new()
    feed = decoder.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    n += len(decoder.close(dispatch_incomplete=True))
    elapsed = time.process_time() - started
    if n != expected:
        raise RuntimeError(f"decoded {n} events, expected {expected}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args(argv)

    events = Rendered(Reply(events=args.events)).events
    stream = b"".join(events)
    boundaries, at = [], 0
    for event in events:
        at += len(event)
        boundaries.append(at)
    rcuts = random_cuts(stream, seed=20_000)
    shapes = {
        "4 KiB": (aligned(events, 4096), fixed(stream, 4096)),
        "64 KiB": (aligned(events, 65536), fixed(stream, 65536)),
        "random": (cut(stream, to_boundaries(rcuts, boundaries)), cut(stream, rcuts)),
    }
    new = make_decoder()
    n = len(events)
    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for shape, pair in shapes.items():
            order = ("aligned", "misaligned") if rep % 2 == 0 else ("misaligned", "aligned")
            for kind in order:
                chunks = pair[0] if kind == "aligned" else pair[1]
                times.setdefault((shape, kind), []).append(run_once(new, chunks, n))
    rows = []
    for shape, pair in shapes.items():
        a, m = times[shape, "aligned"], times[shape, "misaligned"]
        rows.append(
            {
                "shape": shape,
                "aligned_reads": len(pair[0]),
                "misaligned_reads": len(pair[1]),
                "aligned_us_per_event": statistics.median(a) / n * 1e6,
                "misaligned_us_per_event": statistics.median(m) / n * 1e6,
                "ratio": statistics.median(y / x for x, y in zip(a, m, strict=True)),
            }
        )
    if args.json:
        print(json.dumps({"events": n, "reps": args.reps, "rows": rows}))
        return 0
    print(f"SSEDecoder, {n:,} Bailian events, {args.reps} repetitions (medians)\n")
    print("| reads | aligned µs/event | misaligned µs/event | misaligned / aligned |")
    print("|---|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['shape']} ({r['aligned_reads']:,} / {r['misaligned_reads']:,} reads) "
            f"| {r['aligned_us_per_event']:.3f} | {r['misaligned_us_per_event']:.3f} "
            f"| {r['ratio']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
