"""What OpenTelemetry costs a turn: client CPU per 20-event turn, in one run.

Starts ``benchmarks/server.py`` (the raw local Bailian server, in its own process, so its
CPU is not counted) and runs the same sequential 20-event turns on one ``Session`` in a
fresh process per measurement, with telemetry in one of these states:

``off``       OpenTelemetry never imported: what every turn pays when nobody configured it
``api``       the OpenTelemetry API imported, no provider configured (tyqw checks the
              global providers each turn and finds none)
``sdk``       the SDK's TracerProvider with a BatchSpanProcessor whose exporter drops
              every span, and a MeterProvider with an in-memory reader: everything tyqw
              emits is made, nothing is sent
``floor``     the same SDK set up but not installed, so tyqw emits nothing, and after
              each turn one span and four histogram records with the same attributes
              written by hand: what any instrumentation following the GenAI conventions
              pays the SDK for such a turn (``sdk / floor`` above 1 is what tyqw adds)
``baseline``  (``--baseline REF``) ``off`` with the tyqw of a git revision, e.g. the
              commit before telemetry: what a turn cost before the hook points existed

and, apart, ``observer``: the SDK state's turn observer alone, without the network (its
span, 20 messages, the end and its four histogram records): what telemetry adds to a
turn, whatever the turn costs.

CPU is ``time.process_time()`` (every thread of the process: the batch processor's too)
around the turns only, after a warm-up turn. States alternate their order over the
repetitions; the report gives medians and, in brackets, the median of the per-repetition
ratios to ``off``. Targets: ``api`` and ``baseline`` within noise of ``off``; ``sdk`` at
most 1.05 times ``off``.

Run from the repository root, with tyqw installed with its dev extra::

    python benchmarks/bench_telemetry.py                      # 5 repetitions
    python benchmarks/bench_telemetry.py --baseline 8afcbad   # also the code before
    python benchmarks/bench_telemetry.py --quick              # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from children import start_server, stop  # beside this script, which runs from here

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP_ID = "0123456789abcdef0123456789abcdef"
API_KEY = "sk-bench-0000"
EVENTS = 20
STATES = ("off", "api", "sdk", "floor")
TARGET = 1.05


# -- one measurement, in a child process ------------------------------------------------


def child(state: str, base_url: str, turns: int) -> float:
    """CPU seconds of ``turns`` turns with telemetry in ``state``."""
    if state in ("sdk", "observer"):
        sdk()
    if state == "observer":
        return observer_cpu(turns)
    if state == "floor":
        # The SDK's providers exist but are not the global ones: tyqw finds none, emits
        # nothing, and the hand-written instrumentation reports to them.
        return asyncio.run(turns_cpu(base_url, turns, floor_instrumentation(*sdk(install=False))))
    if state == "api":
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    return asyncio.run(turns_cpu(base_url, turns))


def sdk(install: bool = True) -> tuple[Any, Any]:
    """The SDK as an application sets it up, with an exporter that drops every span; its
    providers, which ``install`` makes the global ones."""
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    if install:
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(meter_provider)
    return provider, meter_provider


def observer_cpu(turns: int) -> float:
    """CPU seconds of ``turns`` turn observers fed as a 20-event turn feeds one."""
    from tyqw import TokenUsage
    from tyqw._models import _Text, new_message
    from tyqw._telemetry import turn

    message = new_message("abcd", "sid", "rid", None, None, None, None, None, {}, _Text())
    usage = {"qwen-plus": TokenUsage(12, 80)}
    url = "https://dashscope.aliyuncs.com/api/v1"
    gc.collect()
    start = time.process_time()
    for _ in range(turns):
        observer = turn("invoke_agent", name=APP_ID, base_url=url, agent_id=APP_ID)
        assert observer is not None
        observer.sending()
        for _ in range(EVENTS):
            observer.message(message)
        observer.end(session_id="sid", request_id="rid", finish_reason="stop", usage=usage)
    return time.process_time() - start


def floor_instrumentation(tracer_provider: Any, meter_provider: Any) -> Callable[[], None]:
    """One turn's instrumentation written by hand, without tyqw: what any instrumentation
    following the GenAI conventions pays the SDK for a turn like the benchmark's."""
    from opentelemetry import trace

    tracer = tracer_provider.get_tracer("floor")
    meter = meter_provider.get_meter("floor")
    duration, first_chunk, tokens = (
        meter.create_histogram(name)
        for name in (
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
            "gen_ai.client.token.usage",
        )
    )
    common = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "dashscope",
        "gen_ai.agent.id": APP_ID,
        "server.address": "127.0.0.1",
        "server.port": 8000,
    }

    def instrument() -> None:
        span = tracer.start_span(
            f"invoke_agent {APP_ID}", kind=trace.SpanKind.CLIENT, attributes=common
        )
        span.set_attributes(
            {
                "gen_ai.conversation.id": "sid",
                "gen_ai.response.id": "rid",
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 80,
                "gen_ai.response.model": "qwen-plus",
                "gen_ai.response.time_to_first_chunk": 0.01,
            }
        )
        span.end()
        attributes = {**common, "gen_ai.response.model": "qwen-plus"}
        duration.record(0.2, attributes)
        first_chunk.record(0.01, attributes)
        tokens.record(12, {**attributes, "gen_ai.token.type": "input"})
        tokens.record(80, {**attributes, "gen_ai.token.type": "output"})

    return instrument


async def turns_cpu(
    base_url: str, turns: int, instrument: Callable[[], None] | None = None
) -> float:
    """CPU seconds of ``turns`` turns (``instrument()`` after each, in the count)."""
    from tyqw import Session

    parameters = {"bench_events": EVENTS, "bench_mode": "inc"}
    chars = 0
    with tempfile.TemporaryDirectory() as state_dir:
        async with Session(APP_ID, api_key=API_KEY, base_url=base_url, state_dir=state_dir) as s:
            await s.send("你好", parameters=parameters)  # warm: connection, code paths
            gc.collect()
            start = time.process_time()
            for _ in range(turns):
                async for message in s.stream("你好", parameters=parameters):
                    chars += len(message.delta)
                if instrument is not None:
                    instrument()
            cpu = time.process_time() - start
    expected = turns * (EVENTS - 1) * 4  # the server's pieces: 4 characters each
    if chars != expected:
        raise SystemExit(f"received {chars} characters, expected {expected}")
    return cpu


# -- the run -----------------------------------------------------------------------------


def run_child(state: str, base_url: str, turns: int, baseline: Path | None) -> float:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("OTEL_"):
            del env[name]  # no auto-configuration, no content capture
    mode = state
    if state == "baseline":
        assert baseline is not None
        env["PYTHONPATH"] = str(baseline)  # that revision's tyqw, before the installed one
        mode = "off"
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--base-url", base_url, "--turns", str(turns)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {state} run failed:\n{done.stderr}")
    return float(done.stdout.strip())


def checkout(ref: str, into: Path) -> Path:
    """The tyqw package of git revision ``ref``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "tyqw"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(
    base_url: str, states: tuple[str, ...], reps: int, turns: int, baseline: Path | None
) -> dict[str, Any]:
    cpu: dict[str, list[float]] = {state: [] for state in states}
    for rep in range(reps):
        order = states[rep % len(states) :] + states[: rep % len(states)]
        for state in order:
            cpu[state].append(run_child(state, base_url, turns, baseline))
    per_turn = {state: [c / turns * 1e6 for c in runs] for state, runs in cpu.items()}
    off = per_turn["off"]
    return {
        state: {
            "us_per_turn": statistics.median(runs),
            "ratio": statistics.median(x / o for x, o in zip(runs, off, strict=True)),
            "runs": runs,
        }
        for state, runs in per_turn.items()
    }


def report(results: dict[str, Any], reps: int, turns: int, observer: float | None) -> str:
    lines = [
        f"Telemetry cost: client CPU per {EVENTS}-event turn, {turns} turns, median of {reps} "
        "(ratio to off in brackets)",
        "",
        "| state | µs/turn |",
        "|---|--:|",
    ]
    for state, r in results.items():
        lines.append(f"| {state} | {r['us_per_turn']:.1f} ({r['ratio']:.3f}x) |")
    ratio = results["sdk"]["ratio"]
    verdict = "met" if ratio <= TARGET else "MISSED"
    lines += ["", f"target: sdk <= {TARGET}x off: {ratio:.3f}x, {verdict}"]
    above = statistics.median(
        x / f for x, f in zip(results["sdk"]["runs"], results["floor"]["runs"], strict=True)
    )
    lines.append(
        f"the SDK's floor (the same span and records written by hand, no tyqw telemetry): "
        f"{results['floor']['ratio']:.3f}x off; sdk / floor: {above:.3f}x"
    )
    if observer is not None:
        lines.append(
            f"the observer alone (SDK on, no network): {observer:.1f} µs/turn, "
            f"{observer / results['off']['us_per_turn']:.3f} of an off turn"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 turns, 1 repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 5; quick 1)")
    parser.add_argument("--turns", type=int, help="turns per measurement (default 1000)")
    parser.add_argument("--baseline", metavar="REF", help="also measure tyqw at this git ref")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--child", choices=("off", "api", "sdk", "observer", "floor"), help=argparse.SUPPRESS
    )
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    turns = args.turns or (50 if args.quick else 1000)
    if args.child:
        print(child(args.child, args.base_url, turns))
        return 0
    reps = args.reps or (1 if args.quick else 5)
    states = STATES + (("baseline",) if args.baseline else ())
    server, base_url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = checkout(args.baseline, Path(tmp)) if args.baseline else None
            results = measure(base_url, states, reps, turns, baseline)
        observer = statistics.median(
            run_child("observer", base_url, turns, None) / turns * 1e6 for _ in range(reps)
        )
    finally:
        stop(server)
    print(report(results, reps, turns, observer))
    if args.json:
        raw = {
            "reps": reps,
            "turns": turns,
            "observer_us_per_turn": observer,
            **results,
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
