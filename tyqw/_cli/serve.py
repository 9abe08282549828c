"""``tyqw serve``: the relay and its chat page, in the foreground.

Without ``DASHSCOPE_API_KEY`` the upstream is the built-in simulator, started in this
process, so the page works on a fresh machine. Listening anywhere but loopback needs
``--tokens``: a relay open to the network would let anyone spend the key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import TyqwError
from .._config import environment_api_key, environment_app_id
from ..stores import StoreLocation
from ._common import (
    ERROR,
    OFFLINE_DELAY,
    OK,
    SERVE_PORT,
    UsageError,
    cannot_listen,
    event_loop,
    fail,
    port_number,
    seconds,
    timeout_seconds,
    whole_number,
)

NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so the relay answers with the built-in offline "
    "simulator (canned replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to relay to "
    "your Bailian app."
)
_RATE = re.compile(r"(\d+)(?:/min)?", re.IGNORECASE)


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="a relay and chat page for browsers; the key stays on the server",
        description="Serve a Bailian-compatible endpoint, POST "
        "{prefix}/api/v1/apps/{app_id}/completion, OpenAI's Chat Completions at "
        "{prefix}/v1 (each app id a model), the AI SDK's UI message stream at "
        "{prefix}/api/chat, and a chat page at {prefix}/. "
        "Browsers and SDKs use it with the relay's own tokens; the DashScope key comes "
        "only from DASHSCOPE_API_KEY in this server's environment and never leaves it. "
        "Without the key the upstream is the built-in offline simulator.",
        epilog="Environment: DASHSCOPE_API_KEY, DASHSCOPE_APP_ID, DASHSCOPE_BASE_URL, "
        "DASHSCOPE_WORKSPACE, TYQW_STORE. Tokens file: one 'TOKEN USER' per line, '#' "
        "comments.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument(
        "--port",
        type=port_number,
        default=SERVE_PORT,
        help="default: %(default)s (tyqw simulate's is 8100); 0 picks a free port",
    )
    serve.add_argument(
        "--app-id",
        dest="app_ids",
        metavar="ID",
        nargs="+",
        action="extend",
        help="the Bailian app ids to serve (default: DASHSCOPE_APP_ID)",
    )
    serve.add_argument(
        "--model",
        dest="models",
        metavar="NAME",
        action="append",
        default=[],
        help="also relay this Qwen model at the service's generation endpoint, the "
        "client keeping the history (repeat for more: an allow-list)",
    )
    serve.add_argument(
        "--alias",
        dest="aliases",
        metavar="NAME=TARGET",
        type=_alias,
        action="append",
        default=[],
        help="another name for a served app id or model, listed by /v1/models and "
        "taken by OpenAI clients, like gpt-4o=YOUR_APP_ID (repeat for more)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="where each user's conversation lives: memory (the default unless TYQW_STORE "
        "names another; gone when the relay stops), a folder, or redis://... / rediss://... "
        "(relay workers on one Redis continue the same conversations and share the rate "
        "limit)",
    )
    serve.add_argument(
        "--tokens",
        type=Path,
        metavar="FILE",
        help="user tokens, one 'TOKEN USER' per line; required unless --host is loopback",
    )
    serve.add_argument(
        "--cors",
        metavar="ORIGIN",
        nargs="+",
        action="extend",
        default=[],
        help="origins whose pages may call the relay, like https://example.com",
    )
    serve.add_argument(
        "--rate",
        type=rate,
        default=30,
        metavar="N/MIN",
        help="turns per user per minute (default: 30/min)",
    )
    serve.add_argument(
        "--prefix",
        default="",
        metavar="PATH",
        help="serve under this path, like /tyqw (default: the root)",
    )
    serve.add_argument(
        "--delay",
        type=seconds,
        default=OFFLINE_DELAY,
        metavar="SECONDS",
        help="offline only: seconds between the simulator's events (default: %(default)s)",
    )
    serve.add_argument(
        "--trace-user",
        choices=("id", "hash"),
        default=None,
        help="with OpenTelemetry on (docs/telemetry.md): the user on each request's span "
        "as user.id, or as user.hash (a SHA-256 prefix); default: not at all",
    )
    bounds = serve.add_argument_group(
        "clients that stall or crowd",
        "Every connection is bounded in time and number, so slow or many clients cannot "
        "hold the relay (a stalled answer also holds that user's conversation).",
    )
    bounds.add_argument(
        "--head-timeout",
        type=timeout_seconds,
        default=10.0,
        metavar="SECONDS",
        help="drop a connection whose request head is not complete in this time; also "
        "how long an idle kept-alive connection stays open (default: %(default)g)",
    )
    bounds.add_argument(
        "--body-timeout",
        type=timeout_seconds,
        default=30.0,
        metavar="SECONDS",
        help="answer 408 to a request whose body does not arrive in this time "
        "(default: %(default)g)",
    )
    bounds.add_argument(
        "--send-timeout",
        type=timeout_seconds,
        default=60.0,
        metavar="SECONDS",
        help="drop a client that reads nothing of its answer for this long, ending its "
        "turn (default: %(default)g)",
    )
    bounds.add_argument(
        "--max-connections",
        type=whole_number,
        default=None,
        metavar="N",
        help="open connections in all; past it, new ones get a 503 (default: half of "
        "what the open-file limit leaves after 32, between 8 and 1000)",
    )
    bounds.add_argument(
        "--max-connections-per-peer",
        type=whole_number,
        default=32,
        metavar="N",
        help="open connections from one address other than loopback (default: %(default)s)",
    )
    serve.set_defaults(run=run)


def rate(value: str) -> int:
    match = _RATE.fullmatch(value.strip())
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected turns per minute like 30/min, got {value!r}")
    return int(match.group(1))


def _alias(value: str) -> tuple[str, str]:
    """``--alias NAME=TARGET``."""
    name, equals, target = value.partition("=")
    if not equals or not name.strip() or not target.strip():
        raise argparse.ArgumentTypeError(
            f"must be NAME=TARGET (like gpt-4o=APP_ID), not {value!r}"
        )
    return name.strip(), target.strip()


def _store(args: argparse.Namespace) -> str | Path:
    """``--store``, else ``TYQW_STORE``, else memory, read as every command reads them
    (a mistake is a usage error naming its source); what ``create_app`` takes."""
    try:
        if args.store is not None:
            location = StoreLocation.parse(args.store, source="--store")
        else:
            location = StoreLocation.from_environment() or StoreLocation("memory")
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    if location.kind == "folder":
        return Path(location.target)  # a path: never read again as "memory" or a URL
    return location.target or "memory"


def run(args: argparse.Namespace) -> int:
    from .._config import is_loopback
    from ..relay import create_app

    prefix = args.prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise UsageError("--prefix must start with '/', like /tyqw")
    if args.tokens is None and not is_loopback(args.host):
        raise UsageError(
            f"refusing to listen on {args.host or 'every address'} without authentication: "
            "pass --tokens FILE, or --host 127.0.0.1"
        )
    store = _store(args)
    with event_loop() as loop:
        simulator = None
        upstream: dict[str, Any] = {}
        from_env = environment_app_id()
        app_ids: list[str] = args.app_ids or ([from_env] if from_env else [])
        if not environment_api_key():
            from .._simulator import BailianSimulator

            simulator = loop.run_until_complete(BailianSimulator(delay=args.delay).start())
            print(NO_KEY_NOTICE, file=sys.stderr, flush=True)
            app_ids = args.app_ids or [simulator.app_id]
            upstream = {"api_key": simulator.api_key, "base_url": simulator.base_url}
        elif not app_ids and not args.models:
            raise UsageError("no app id: pass --app-id (or --model), or set DASHSCOPE_APP_ID")
        try:
            relay = create_app(
                app_ids,
                tokens=args.tokens,
                allow_anonymous=args.tokens is None,
                store=store,
                cors=args.cors,
                rate=args.rate,
                models=args.models,
                aliases=dict(args.aliases),
                trace_user=args.trace_user,
                body_timeout=args.body_timeout,
                send_timeout=args.send_timeout,
                **upstream,
            )
        except (ValueError, ImportError, TyqwError) as exc:
            _stop(loop, simulator)
            raise UsageError(str(exc)) from None
        except OSError as exc:
            _stop(loop, simulator)
            raise UsageError(f"cannot read {args.tokens}: {exc.strerror or exc}") from None
        try:
            return _serve(loop, relay, args, prefix, app_ids, args.models)
        finally:
            _stop(loop, simulator)


def _serve(
    loop: asyncio.AbstractEventLoop,
    relay: web.Application,
    args: argparse.Namespace,
    prefix: str,
    app_ids: list[str],
    models: list[str],
) -> int:
    root = relay
    if prefix:
        root = web.Application()

        async def to_page(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{prefix}/")

        root.router.add_get(prefix, to_page)  # before the sub-app, which would match it
        root.add_subapp(prefix, relay)
    from ..relay._limits import ConnectionLimits, Site, default_max_connections

    # handler_cancellation: a browser that goes away ends its turn at once. A kept-alive
    # connection's next request head gets the time its first had (aiohttp's timer).
    runner = web.AppRunner(
        root, handler_cancellation=True, access_log=None, keepalive_timeout=args.head_timeout
    )
    loop.run_until_complete(runner.setup())
    limits = ConnectionLimits(
        head_timeout=args.head_timeout,
        max_connections=args.max_connections or default_max_connections(),
        max_connections_per_peer=args.max_connections_per_peer,
    )
    try:
        site = Site(runner, args.host, args.port, limits)
        try:
            loop.run_until_complete(site.start())
        except (OSError, OverflowError) as exc:
            fail(cannot_listen(args.host, args.port, exc))
            return ERROR
        host, port = _address(runner, args.host)
        base = f"http://{host}:{port}{prefix}"
        print(f"tyqw relay: open {base}/ in a browser")
        print(f"  API: POST {base}/api/v1/apps/{{app_id}}/completion")
        if app_ids:
            print(f"  OpenAI clients: base URL {base}/v1; AI SDK useChat: POST {base}/api/chat")
            print(f"  apps: {', '.join(app_ids)}")
        else:
            print(f"  OpenAI clients: base URL {base}/v1")
        if models:
            print(f"  API: POST {base}/api/v1/services/aigc/text-generation/generation")
            print(f"  models: {', '.join(models)}")
        if args.tokens is None:
            print("  no --tokens: only this machine can use it. Ctrl-C stops it.", flush=True)
        else:
            print("  clients send Authorization: Bearer <token>. Ctrl-C stops it.", flush=True)
        stopped = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, AttributeError):
                loop.add_signal_handler(signum, stopped.set)
        try:
            loop.run_until_complete(stopped.wait())
        except KeyboardInterrupt:  # where signal handlers are not available
            pass
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, AttributeError):
                    loop.remove_signal_handler(signum)
    finally:
        loop.run_until_complete(runner.cleanup())
    print("tyqw: relay stopped", file=sys.stderr)
    return OK


def _address(runner: web.AppRunner, host: str) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple):
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            return (shown if host not in ("", "0.0.0.0", "::") else "127.0.0.1"), address[1]
    return host, 0


def _stop(loop: asyncio.AbstractEventLoop, simulator: Any) -> None:
    if simulator is not None:
        loop.run_until_complete(simulator.aclose())
