"""What the benchmark asks for: reply shapes (shared with the server) and scenarios.

The server decides what to send from the request body's ``parameters`` (every client
under test can pass extra keys there):

``bench_events``  total events in the reply, the final ``finish_reason:"stop"`` one included
``bench_mode``    ``"inc"`` (each event carries the new piece, the last one ``text:""``) or
                  ``"cum"`` (each event repeats the whole text so far, the last one too);
                  absent: follows ``incremental_output`` like the real service
``bench_piece``   characters per text piece (default 4)
``bench_big``     if > 0: one event whose ``data:`` line is about this many bytes, then stop
``bench_burst``   if true: the whole body in one write instead of one write per event
``bench_slices``  if > 0: the body in writes of this many bytes, cut wherever they fall (so
                  reads end inside events); -1: writes of random sizes, 1 B to 16 KiB
                  (seeded: the same cuts every time)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Mixed CJK and ASCII with full-width punctuation, like a real reply; the pieces are cut
# from it cyclically.
CORPUS = (
    "今天的天气很好，适合出去散步。Python 的 asyncio 让并发变得简单；"
    "我们用 aiohttp 读取服务器推送的事件流。Hello, world! 这是一个用于性能测试的回复，"
    "内容会不断重复，直到达到所需的长度。Streaming replies arrive piece by piece. "
)
DEFAULT_PIECE = 4
SLICE = 4093  # bytes per write in the "sliced" scenario: prime, so it drifts across events
RANDOM_SLICES = -1  # bench_slices value for writes of random sizes
LARGEST_RANDOM_SLICE = 16 * 1024


@dataclass(frozen=True)
class Reply:
    """The shape of one reply: what a request asks the server for."""

    events: int = 20
    mode: str = "inc"
    piece: int = DEFAULT_PIECE
    big: int = 0
    burst: bool = False
    slices: int = 0

    @property
    def incremental(self) -> bool:
        return self.mode == "inc"

    def params(self) -> dict[str, Any]:
        """The ``bench_*`` keys for the request's ``parameters``."""
        out: dict[str, Any] = {"bench_events": self.events, "bench_mode": self.mode}
        if self.piece != DEFAULT_PIECE:
            out["bench_piece"] = self.piece
        if self.big:
            out["bench_big"] = self.big
        if self.burst:
            out["bench_burst"] = True
        if self.slices:
            out["bench_slices"] = self.slices
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Reply:
        mode = params.get("bench_mode")
        if mode not in ("inc", "cum"):
            mode = "inc" if params.get("incremental_output") is True else "cum"
        big = int(params.get("bench_big") or 0)
        events = 2 if big else max(1, int(params.get("bench_events") or 20))
        return cls(
            events=events,
            mode=mode,
            piece=max(1, int(params.get("bench_piece") or DEFAULT_PIECE)),
            big=big,
            burst=bool(params.get("bench_burst")),
            slices=int(params.get("bench_slices") or 0),
        )

    def pieces(self) -> list[str]:
        """The text pieces of the reply, one per event before the final one."""
        if self.big:
            # One piece whose UTF-8 form (CJK is 3 bytes a character) is about `big` bytes.
            unit = CORPUS.encode()
            reps = self.big // len(unit) + 1
            text = (CORPUS * reps).encode()[: self.big].decode("utf-8", "ignore")
            return [text]
        n = self.events - 1
        doubled = CORPUS * (self.piece // len(CORPUS) + 2)
        size = len(CORPUS)
        return [doubled[(k * self.piece) % size :][: self.piece] for k in range(n)]

    def expected_chars(self) -> int:
        """Characters a delta-accumulating client sees in total (= the final text length)."""
        return sum(len(p) for p in self.pieces())


@dataclass(frozen=True)
class Scenario:
    """One measurement: a reply shape and how to drive it."""

    name: str
    kind: str  # "stream" | "concurrent" | "sequential" | "ttfe" | "memory"
    reply: Reply
    repeat: int = 1  # sequential requests (stream, sequential, ttfe kinds); rounds (concurrent)
    streams: int = 1  # concurrent streams (concurrent kind)
    # Every tyqw Session in ONE state folder (its own conversation name each), as a
    # backend keeps them; otherwise one folder per Session.
    shared_state: bool = False
    # Exchanges already in each tyqw Session's transcript when it opens (a long-lived
    # backend's conversations hold the default 200), so a turn's append meets a full file.
    seed_history: int = 0
    warmup: Reply = field(default_factory=Reply)
    warmup_count: int = 1
    flat_window: int = 0  # events compared at the start and the end of the reply
    title: str = ""
    unit: str = "us/event"


def scenarios(quick: bool = False) -> dict[str, Scenario]:
    """The scenario table; ``quick`` shrinks every size so the whole run takes seconds."""

    def q(full: int, small: int) -> int:
        return small if quick else full

    single_events = q(20_000, 2_000)
    table = [
        Scenario(
            "single",
            "stream",
            Reply(events=single_events),
            title=f"1 stream x {single_events:,} incremental events",
        ),
        # The same reply written in one go: every read is a full buffer from the first event
        # to the last, so the first and last windows of events are read the same way and
        # their CPU can be compared (with one write per event the first reads are small).
        Scenario(
            "flat",
            "stream",
            Reply(events=single_events, burst=True),
            flat_window=single_events // 20,
            title=f"last vs first {single_events // 20:,} of {single_events:,} events",
            unit="ratio",
        ),
        # The same reply in writes that ignore event boundaries, as a busy connection's
        # large reads do: most reads then start and end inside an event.
        Scenario(
            "sliced",
            "stream",
            Reply(events=single_events, slices=SLICE),
            title=f"1 stream x {single_events:,} events in {SLICE:,}-byte writes",
        ),
        Scenario(
            "sliced_random",
            "stream",
            Reply(events=single_events, slices=RANDOM_SLICES),
            title=f"1 stream x {single_events:,} events in writes of random size",
        ),
        Scenario(
            "concurrent",
            "concurrent",
            Reply(events=q(200, 50)),
            streams=q(200, 20),
            warmup=Reply(events=2),
            title=f"{q(200, 20)} concurrent streams x {q(200, 50)} events",
        ),
        # The server writes each reply in one go, as fast as the socket takes (a busy
        # upstream, a relay behind a fast link): every read is a full buffer, so per-read
        # costs shrink and what a client pays per turn and per event shows. The Sessions
        # share one state folder, with the default FileStore and transcripts, as a
        # chatbot backend keeps them.
        Scenario(
            "fast_single",
            "stream",
            Reply(events=200, burst=True),
            repeat=q(100, 10),
            shared_state=True,
            seed_history=200,
            warmup=Reply(events=200, burst=True),
            warmup_count=3,
            title=f"fast server: 1 stream, {q(100, 10)} x 200-event replies",
        ),
        Scenario(
            "fast_concurrent",
            "concurrent",
            Reply(events=q(200, 50), burst=True),
            streams=q(200, 20),
            repeat=q(3, 1),
            shared_state=True,
            seed_history=200,
            warmup=Reply(events=2, burst=True),
            title=f"fast server: {q(200, 20)} concurrent streams x {q(200, 50)} events, "
            "one state folder",
        ),
        Scenario(
            "fast_sequential",
            "sequential",
            Reply(events=20, burst=True),
            repeat=q(1_000, 50),
            shared_state=True,
            seed_history=200,
            warmup_count=10,
            warmup=Reply(events=20, burst=True),
            title=f"fast server: per request, {q(1_000, 50):,} sequential 20-event streams",
            unit="us/request",
        ),
        Scenario(
            "sequential",
            "sequential",
            Reply(events=20),
            repeat=q(1_000, 50),
            warmup_count=10,
            title=f"per request, {q(1_000, 50):,} sequential 20-event streams",
            unit="us/request",
        ),
        Scenario(
            "ttfe",
            "ttfe",
            Reply(events=20),
            repeat=q(200, 20),
            title="warm time to first event",
            unit="ms",
        ),
        Scenario(
            "cumulative",
            "stream",
            Reply(events=q(2_000, 200), mode="cum"),
            repeat=q(3, 1),
            warmup=Reply(events=20, mode="cum"),
            title=f"{q(2_000, 200):,}-event cumulative reply",
        ),
        Scenario(
            "bigline",
            "stream",
            Reply(big=650_000),
            repeat=q(10, 2),
            warmup=Reply(big=650_000),
            title="reply with one 650 KB data line",
            unit="ms/reply",
        ),
        Scenario(
            "memory",
            "memory",
            Reply(events=q(100_000, 5_000)),
            title=f"peak RSS during a {q(100_000, 5_000):,}-event reply",
            unit="MB",
        ),
    ]
    return {s.name: s for s in table}


SCENARIO_NAMES = tuple(scenarios())
