"""``tyqw simulate``: the Bailian simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from typing import Any

from ._common import ERROR, OFFLINE_DELAY, OK, event_loop, fail, seconds


def add_parser(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="run the Bailian simulator in the foreground",
        description="Serve the built-in Bailian simulator until Ctrl-C, and print the "
        "environment that points the SDK or the CLI at it. It remembers conversations "
        "while it runs, so `tyqw ask` continues one across invocations.",
    )
    simulate.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulate.add_argument(
        "--port", type=int, default=8000, help="default: %(default)s; 0 picks a free port"
    )
    simulate.add_argument(
        "--delay",
        type=seconds,
        default=OFFLINE_DELAY,
        metavar="SECONDS",
        help="seconds between streamed events (default: %(default)s)",
    )
    simulate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..testing import BailianSimulator

    simulator = BailianSimulator(host=args.host, port=args.port, delay=args.delay)
    with event_loop() as loop:
        try:
            loop.run_until_complete(simulator.start())
        except OSError as exc:
            fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
            return ERROR
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(simulator.aclose()))

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, AttributeError):
                loop.add_signal_handler(signum, stop)
        env = {
            "DASHSCOPE_BASE_URL": simulator.base_url,
            "DASHSCOPE_API_KEY": simulator.api_key,
            "DASHSCOPE_APP_ID": simulator.app_id,
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"Bailian simulator listening on {simulator.base_url}")
        print("Point the SDK or the CLI at it, e.g. in another terminal:")
        print(f"  export {exports}")
        print('  tyqw ask "你好，我叫小明" && tyqw ask "我叫什么名字？"')
        print("It remembers conversations until it stops. Ctrl-C stops it.", flush=True)
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
