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
whatever the read boundaries when the ratio is near 1. Two more rows put numbers on the
opt-in mode for older gateways: the plain decoder against the turn's (both aligned 4 KiB:
the mode's cost on Bailian's usual framing), and the same frames without their blank
lines (misaligned 4 KiB) against with them. Needs only tyqw importable (the repo's
``.venv`` or ``benchmarks/.env``); nothing else, no server.
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


Factory = Callable[[], SSEDecoder]
Run = tuple[Factory, Chunks]


def turn_decoder() -> Factory:
    """A factory for decoders configured as a turn configures them."""
    params = inspect.signature(SSEDecoder).parameters
    kwargs = {"implicit_dispatch": True} if "implicit_dispatch" in params else {}
    return lambda: SSEDecoder(**kwargs)


def run_once(run: Run, expected: int) -> float:
    """CPU seconds to decode the chunks with a new decoder (the event count is checked)."""
    new, chunks = run
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
    parser.add_argument(
        "--quick", action="store_true", help="2,000 events, 1 repetition (CI: the harness runs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.reps = 2_000, 1

    events = Rendered(Reply(events=args.events)).events
    stream = b"".join(events)
    boundaries, at = [], 0
    for event in events:
        at += len(event)
        boundaries.append(at)
    rcuts = random_cuts(stream, seed=20_000)
    turn = turn_decoder()
    # label -> (the reference run, the run compared with it)
    rows: dict[str, tuple[str, Run, str, Run]] = {
        "4 KiB": (
            "aligned",
            (turn, aligned(events, 4096)),
            "misaligned",
            (turn, fixed(stream, 4096)),
        ),
        "64 KiB": (
            "aligned",
            (turn, aligned(events, 65536)),
            "misaligned",
            (turn, fixed(stream, 65536)),
        ),
        "random": (
            "aligned",
            (turn, cut(stream, to_boundaries(rcuts, boundaries))),
            "misaligned",
            (turn, cut(stream, rcuts)),
        ),
    }
    if "implicit_dispatch" in inspect.signature(SSEDecoder).parameters:
        blankless = stream.replace(b"\n\n", b"\n")
        rows["4 KiB, the mode's cost"] = (
            "plain decoder",
            (SSEDecoder, aligned(events, 4096)),
            "turn's decoder",
            (turn, aligned(events, 4096)),
        )
        rows["4 KiB, no blank lines"] = (
            "blank lines",
            (turn, fixed(stream, 4096)),
            "none (older gateways)",
            (turn, fixed(blankless, 4096)),
        )
    n = len(events)
    times: dict[tuple[str, int], list[float]] = {}
    for rep in range(args.reps):
        for label, (_, first, _, second) in rows.items():
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for which in order:
                run = first if which == 0 else second
                times.setdefault((label, which), []).append(run_once(run, n))
    out = []
    for label, (name_a, run_a, name_b, run_b) in rows.items():
        a, b = times[label, 0], times[label, 1]
        out.append(
            {
                "reads": label,
                "a": name_a,
                "b": name_b,
                "a_reads": len(run_a[1]),
                "b_reads": len(run_b[1]),
                "a_us_per_event": statistics.median(a) / n * 1e6,
                "b_us_per_event": statistics.median(b) / n * 1e6,
                "ratio": statistics.median(y / x for x, y in zip(a, b, strict=True)),
            }
        )
    if args.json:
        print(json.dumps({"events": n, "reps": args.reps, "rows": out}))
        return 0
    print(f"SSEDecoder, {n:,} Bailian events, {args.reps} repetitions (medians)\n")
    print("| reads | A | µs/event | B | µs/event | B / A |")
    print("|---|---|--:|---|--:|--:|")
    for r in out:
        print(
            f"| {r['reads']} | {r['a']} ({r['a_reads']:,} reads) | {r['a_us_per_event']:.3f} "
            f"| {r['b']} ({r['b_reads']:,} reads) | {r['b_us_per_event']:.3f} "
            f"| {r['ratio']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
