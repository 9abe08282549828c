"""``tyqw simulate``: the Bailian simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from typing import Any

from .._config import simulator_environment
from ._common import (
    ERROR,
    OFFLINE_DELAY,
    OK,
    SIMULATE_PORT,
    UsageError,
    cannot_listen,
    event_loop,
    fail,
    port_number,
    seconds,
)


def add_parser(commands: Any) -> None:
    from .._simulator import SPEC_HELP

    simulate = commands.add_parser(
        "simulate",
        help="run the Bailian simulator in the foreground",
        # Wrapped here: the raw formatter keeps the fault table below as written.
        description="Serve the built-in Bailian simulator until Ctrl-C, and print the\n"
        "environment that points tyqw, the official dashscope SDK or the CLI at it. It\n"
        "remembers conversations while it runs, so `tyqw ask` continues one across\n"
        "invocations. --fault makes the next requests fail, to try a client against\n"
        "throttling, cut streams or stalls.",
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulate.add_argument(
        "--port",
        type=port_number,
        default=SIMULATE_PORT,
        help="default: %(default)s (tyqw serve's is 8000); 0 picks a free port",
    )
    simulate.add_argument(
        "--delay",
        type=seconds,
        default=OFFLINE_DELAY,
        metavar="SECONDS",
        help="seconds between streamed events (default: %(default)s)",
    )
    simulate.add_argument(
        "--app-id",
        action="append",
        default=[],
        metavar="ID",
        help="an app id that exists (repeatable; default: the simulator's own); requests "
        "for any other get InvalidParameter, as from the service",
    )
    simulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="queue a failure for the next requests (repeatable, in order), e.g. "
        "http:429x2, cut:3, stall:5@2; the specs are listed below",
    )
    simulate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._simulator import BailianSimulator, parse_fault_spec
    from .._simulator.apps import APP_ID_PATTERN

    for app_id in args.app_id:
        if not APP_ID_PATTERN.fullmatch(app_id):
            raise UsageError(f"--app-id {app_id!r}: expected 1-64 of A-Z a-z 0-9 _ -")
    faults = []
    for spec in args.fault:
        try:
            faults.append(parse_fault_spec(spec))
        except ValueError as exc:
            raise UsageError(f"--fault {spec!r}: {exc} (see tyqw simulate --help)") from None
    simulator = BailianSimulator(
        host=args.host, port=args.port, delay=args.delay, app_ids=args.app_id or None
    )
    for fault, times in faults:
        simulator.inject(fault, times)
    with event_loop() as loop:
        try:
            loop.run_until_complete(simulator.start())
        except (OSError, OverflowError) as exc:
            fail(cannot_listen(args.host, args.port, exc))
            return ERROR
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(simulator.aclose()))

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, AttributeError):
                loop.add_signal_handler(signum, stop)
        _print_banner(simulator, args)
        try:
            loop.run_until_complete(simulator.serve_forever())
        except KeyboardInterrupt:  # where signal handlers are not available
            pass
        finally:
            for task in stopping:
                loop.run_until_complete(task)
            loop.run_until_complete(simulator.aclose())
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, AttributeError):
                    loop.remove_signal_handler(signum)
    print("tyqw: simulator stopped", file=sys.stderr)
    return OK


def _print_banner(simulator: Any, args: argparse.Namespace) -> None:
    # Both base URL names: the official SDK must not send the simulator's key to the
    # real service.
    env = simulator_environment(simulator.base_url, simulator.api_key, simulator.app_id)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    print(f"Bailian simulator listening on {simulator.base_url}")
    if len(args.app_id) > 1:
        print(f"App ids: {' '.join(args.app_id)}")
    if args.fault:
        print(f"Faults for the next requests, in order: {' '.join(args.fault)}")
    print("Point the SDK or the CLI at it, e.g. in another terminal:")
    print(f"  export {exports}")
    print('  tyqw ask "你好，我叫小明" && tyqw ask "我叫什么名字？"')
    print("It remembers conversations until it stops. Ctrl-C stops it.", flush=True)
