"""What every ``tyqw`` command shares: exit codes, flags, connecting, the event loop, Ctrl-C.

Every value the command line reads is checked before any request, so a mistake is one
line and exit status 2: argument text the locale cannot decode, an API key that cannot go
in a header, and (through the SDK's own checks) the app id, base URL and workspace, even
in offline mode, which does not use them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import io
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from .. import DEFAULT_BASE_URL, Session, TyqwError
from .._config import environment_app_id, find_api_key
from ..stores import MemoryStore
from ._output import cli_words, error_line
from ._output import fail as fail  # simulate takes it from here
from ._stores import ChosenStore, StoreUsageError, choose_store, store_parent

if TYPE_CHECKING:
    from .._simulator import BailianSimulator

OK = 0
ERROR = 1
USAGE = 2
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

OFFLINE_DELAY = 0.03  # seconds between simulated events: slow enough to see it stream
# Apart, so that the README's `tyqw simulate` and `tyqw serve` can run side by side.
SIMULATE_PORT = 8100
SERVE_PORT = 8000
NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so using the built-in offline simulator (canned "
    "replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to talk to your Bailian app."
)
OFFLINE_NOTICE = (
    "tyqw: --offline: using the built-in offline simulator (canned replies); "
    "your key and app are not used."
)


class UsageError(Exception):
    """A mistake in the command line or configuration: exit status 2."""


class CommandError(Exception):
    """A failure already worded as one line (a store that could not be written): exit 1."""


# -- checking what the command line reads ----------------------------------------------

_UNDECODABLE = re.compile("[\ud800-\udfff]")  # how Python keeps bytes it could not decode


def undecodable(value: str, encoding: str) -> str | None:
    """Why ``value`` is not text (bytes ``encoding`` could not decode), or None if it is."""
    found = _UNDECODABLE.search(value)
    if found is None:
        return None
    code = ord(found.group())
    byte = f" (byte 0x{code - 0xDC00:02x})" if 0xDC80 <= code <= 0xDCFF else ""
    return f"not valid {encoding.upper()} text at character {found.start() + 1}{byte}"


def lenient(stream: TextIO) -> TextIO:
    """``stream``, reading undecodable bytes as lone surrogates for :func:`undecodable`."""
    if isinstance(stream, io.TextIOWrapper):  # a real text file, not a StringIO
        with contextlib.suppress(ValueError):  # closed, or already read from
            stream.reconfigure(errors="surrogateescape")
    return stream


def text(value: str) -> str:
    """An argument that must be text: refuses bytes the locale cannot decode."""
    problem = undecodable(value, sys.getfilesystemencoding())
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def name(value: str) -> str:
    """A conversation name: printable text (it is shown in ``tyqw conversations list``)."""
    if not text(value):
        raise argparse.ArgumentTypeError("must not be empty")
    if not value.isprintable():
        raise argparse.ArgumentTypeError(f"{value!r} holds a control character")
    return value


def base_url(value: str) -> str:
    """A URL that can be dialled: no spaces, a port in range. The SDK checks the rest."""
    text(value)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} holds a space or a control character")
    try:
        urlsplit(value).port  # noqa: B018  (raises ValueError: out of range, not a number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a URL ({exc})") from None
    return value


def seconds(value: str) -> float:
    """A pause (``--delay``): a number of seconds from 0 to 60, for every command."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= number <= 60:  # NaN fails this too
        raise argparse.ArgumentTypeError("expected 0 to 60 seconds")
    return number


def timeout_seconds(value: str) -> float:
    """A time bound (``--head-timeout`` and the like): a finite number of seconds > 0."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return number


def whole_number(value: str) -> int:
    """A count (``--max-connections`` and the like): a whole number >= 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


def port_number(value: str) -> int:
    """A port to listen on (``--port``) for every command: 0 (any free port) to 65535."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {value!r}")
    return number


def cannot_listen(host: str, number: int, exc: BaseException) -> str:
    """The one line for a listening socket that could not be opened, with the way out
    when the port is taken (``simulate`` and ``serve`` are often run side by side)."""
    # asyncio words a failed bind as "error while attempting to bind on address (...)";
    # the errno's own words are what the user needs.
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
    line = f"cannot listen on {host}:{number}: {reason}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        line += (
            " (another program, perhaps another tyqw simulate or serve, is using that "
            "port: pass --port with another number, or --port 0 for any free port)"
        )
    return line


# -- the shared flags ------------------------------------------------------------------


def state_parent() -> argparse.ArgumentParser:
    """``--store`` and ``--state-dir``: where conversation ids live."""
    return store_parent()


def open_store(args: argparse.Namespace) -> ChosenStore:
    """The store ``--store``, ``--state-dir`` or ``TYQW_STORE`` names; the caller closes it
    (``close_store``)."""
    try:
        return choose_store(args)
    except StoreUsageError as exc:
        raise UsageError(str(exc)) from None


def close_store(loop: asyncio.AbstractEventLoop, chosen: ChosenStore) -> None:
    loop.run_until_complete(chosen.store.aclose())


def service_parent() -> argparse.ArgumentParser:
    """The connection flags of ``chat`` and ``ask``."""
    service = argparse.ArgumentParser(add_help=False, parents=[state_parent()])
    group = service.add_argument_group("connection")
    group.add_argument(
        "--app-id", type=text, metavar="ID", help="the Bailian app id (DASHSCOPE_APP_ID)"
    )
    group.add_argument(
        "--model",
        type=text,
        metavar="NAME",
        help="chat with a Qwen model (e.g. qwen-plus) instead of an app; tyqw keeps the history",
    )
    group.add_argument(
        "--system", type=text, metavar="TEXT", help="with --model: the system message"
    )
    group.add_argument(
        "--base-url",
        type=base_url,
        metavar="URL",
        help=f"API base URL (DASHSCOPE_BASE_URL; default: {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--workspace", type=text, metavar="ID", help="workspace id (DASHSCOPE_WORKSPACE)"
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL on a host other than this machine "
        "(the API key then travels unencrypted)",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        help="use the built-in simulator even when DASHSCOPE_API_KEY is set",
    )
    group.add_argument(
        "--delay",
        type=seconds,
        metavar="SECONDS",
        help=f"offline only: seconds between the simulator's events (default: {OFFLINE_DELAY})",
    )
    return service


def conversation_parent() -> argparse.ArgumentParser:
    """``--name`` and ``--new``."""
    conversation = argparse.ArgumentParser(add_help=False)
    conversation.add_argument(
        "--name",
        type=name,
        default="default",
        help="which stored conversation to continue (default: %(default)s)",
    )
    conversation.add_argument(
        "--new", action="store_true", help="forget the stored conversation and start anew"
    )
    return conversation


# -- connecting ------------------------------------------------------------------------


@contextlib.contextmanager
def open_session(
    args: argparse.Namespace, loop: asyncio.AbstractEventLoop
) -> Iterator[tuple[Session, BailianSimulator | None, ChosenStore]]:
    """The Session the flags and environment ask for (offline, with its simulator), and
    the store it keeps its conversation in.

    All are closed on the way out, however it is left: Ctrl-C can come at any moment.
    A store that cannot take what the Session still had to write (``--new`` before a
    failed turn) is a ``CommandError``. A Ctrl-C while they open or close waits for that
    to finish, then ends the command: nothing is left half-opened or half-closed.
    """
    with _ctrl_c_deferred() as allowed:
        yield from _open_session(args, loop, allowed)


def _open_session(
    args: argparse.Namespace, loop: asyncio.AbstractEventLoop, allowed: _Allowed
) -> Iterator[tuple[Session, BailianSimulator | None, ChosenStore]]:
    simulator = None
    try:
        key = find_api_key()  # DASHSCOPE_API_KEY, then the key files, as the SDK reads them
    except (ValueError, TyqwError) as exc:
        raise UsageError(str(exc)) from None
    if args.model is not None and args.app_id:
        raise UsageError("pass --app-id or --model, not both")
    if args.system is not None and args.model is None:
        raise UsageError("--system is for --model (an app has its own prompt)")
    chosen = open_store(args)
    try:
        if args.offline or key is None:
            unused = _unused_connection_flags(args)
            from .._simulator import OFFLINE_APP_ID, BailianSimulator

            delay = OFFLINE_DELAY if args.delay is None else args.delay
            simulator = BailianSimulator(app_ids=[OFFLINE_APP_ID], delay=delay)
            loop.run_until_complete(simulator.start())
            print(OFFLINE_NOTICE if args.offline else NO_KEY_NOTICE, file=sys.stderr, flush=True)
            if unused:
                print(
                    f"tyqw: offline mode does not use {', '.join(unused)} (they are for your "
                    "Bailian app, with DASHSCOPE_API_KEY)",
                    file=sys.stderr,
                    flush=True,
                )
            # An offline conversation lives in this run's memory only: its id means
            # something to this run's simulator alone, which ends with the run. Stored, it
            # would make a second offline run at the same time (same app id, same name)
            # continue an id its own simulator never knew, and both would silently forget.
            # The store named by the flags was checked all the same; it is left untouched.
            close_store(loop, chosen)
            chosen = ChosenStore(MemoryStore(), "memory, for this run only")
            app_id = simulator.app_id
            api_key: str | None = simulator.api_key
            url: str | None = simulator.base_url
            workspace: str | None = ""
        else:
            app_id = args.app_id or environment_app_id()
            if not app_id and args.model is None:
                raise UsageError(
                    "no app id: pass --app-id or set DASHSCOPE_APP_ID (the id on your "
                    "application's card in the Bailian console)"
                )
            if args.delay is not None:
                print(
                    "tyqw: --delay is for offline mode; your app sets its own pace",
                    file=sys.stderr,
                )
            api_key, url, workspace = None, args.base_url, args.workspace  # None: from the env
        try:
            session = Session(
                None if args.model is not None else app_id,
                model=args.model,
                system=args.system,
                api_key=api_key,
                base_url=url,
                workspace=workspace,
                name=args.name,
                store=chosen.store,
                allow_insecure_http=args.allow_insecure_http,
            )
        except (ValueError, TyqwError) as exc:
            raise UsageError(cli_words(str(exc))) from None
        try:
            if args.new:
                session.clear()
            with allowed():  # Ctrl-C acts as usual while the command runs
                yield session, simulator, chosen
        finally:
            _close_session(loop, session)
    finally:
        try:
            if simulator is not None:
                loop.run_until_complete(simulator.aclose())
        finally:
            close_store(loop, chosen)


def _close_session(loop: asyncio.AbstractEventLoop, session: Session) -> None:
    leaving = sys.exc_info()[1]  # called from a finally: what is on its way out, if any
    try:
        loop.run_until_complete(session.aclose())
    except TyqwError as exc:
        if leaving is None:
            raise CommandError(error_line(exc)) from None
        fail(error_line(exc))  # the command ends anyway: say this too, and let it go on


def _unused_connection_flags(args: argparse.Namespace) -> list[str]:
    """Offline: the flags given for a real app, checked by the SDK all the same."""
    given = [
        flag
        for flag, value in (
            ("--app-id", args.app_id),
            ("--base-url", args.base_url),
            ("--workspace", args.workspace),
            ("--allow-insecure-http", args.allow_insecure_http),
        )
        if value
    ]
    if given:
        try:  # the SDK's own checks, on a Session that is never used
            Session(
                args.app_id or "app",
                api_key="unused",
                base_url=args.base_url or DEFAULT_BASE_URL,
                workspace=args.workspace or "",
                store=MemoryStore(),
                allow_insecure_http=args.allow_insecure_http,
            )
        except ValueError as exc:
            raise UsageError(cli_words(str(exc))) from None
    return given


_Allowed = Callable[[], AbstractContextManager[None]]


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[_Allowed]:
    """Inside, Ctrl-C is held until the block ends, then raises ``KeyboardInterrupt``;
    inside what it yields (``with allowed():``) Ctrl-C acts as usual.

    Off the main thread signals are not ours to hold: Ctrl-C acts as usual throughout.
    """
    pressed: list[bool] = []

    def hold(signum: int, frame: object) -> None:
        pressed.append(True)

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:  # not the main thread
        yield contextlib.nullcontext
        return

    @contextlib.contextmanager
    def allowed() -> Iterator[None]:
        signal.signal(signal.SIGINT, usual)
        try:
            if pressed:  # pressed while opening: end now, before the command starts
                pressed.clear()
                raise KeyboardInterrupt
            yield
        finally:
            signal.signal(signal.SIGINT, hold)

    usual = previous or signal.default_int_handler  # None: a handler not set from Python
    try:
        yield allowed
    finally:
        signal.signal(signal.SIGINT, usual)
    if pressed:  # pressed while closing, nothing else on its way out
        raise KeyboardInterrupt


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The command's own loop, on the main thread, driven with ``run_until_complete()``.

    Why not ``SyncSession`` and its loop thread (``tyqw._loop_thread``): that thread is
    for code that cannot own a loop. A command owns the process, so its loop runs on the
    main thread, where Ctrl-C arrives: ``ctrl_c_aborts`` hooks SIGINT into the loop
    itself (``add_signal_handler``) instead of catching ``KeyboardInterrupt`` in one
    thread and handing it to another. One loop also holds the Session, its store and the
    in-process simulator across a REPL's turns, reading input between
    ``run_until_complete()`` calls; the turns themselves are ``Session.send()`` /
    ``stream()``, the same code ``SyncSession`` drives.
    """
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


@contextlib.contextmanager
def ctrl_c_aborts(loop: asyncio.AbstractEventLoop, session: Session) -> Iterator[list[bool]]:
    """While inside, Ctrl-C calls ``session.abort()``; the list is non-empty if it did.

    Outside, Ctrl-C raises ``KeyboardInterrupt`` as usual (at a prompt, in input()).
    """
    pressed: list[bool] = []

    def on_sigint() -> None:
        pressed.append(True)
        session.abort()

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except NotImplementedError:  # Windows: a plain handler that hands over to the loop
        # Always a hand-over, never on_loop(): the handler interrupts the loop's own
        # thread mid-step, where running abort() at once could find it half-changed.
        previous = signal.signal(
            signal.SIGINT, lambda signum, frame: loop.call_soon_threadsafe(on_sigint)
        )

        def restore() -> None:
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)

    except (RuntimeError, ValueError):  # not the main thread: signals are not ours

        def restore() -> None:
            pass

    try:
        yield pressed
    finally:
        restore()
