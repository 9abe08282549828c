"""The ``tyqw`` command: ``chat``, ``ask``, ``conversations``, ``simulate`` and ``serve``.

A thin layer over the public API, one module per command: ``Session`` does the talking,
``stored_conversations`` the listing, the simulator the offline mode. With no
``DASHSCOPE_API_KEY`` (or with ``--offline``) ``chat`` and ``ask`` start the simulator
in-process, so the whole flow can be tried without an account.

Exit codes: 0 success, 1 an API or stream error, 2 a usage error (one line on stderr),
130 Ctrl-C during ``ask``, 141 when the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from . import ask, chat, conversations, serve, simulate
from ._common import BROKEN_PIPE, ERROR, INTERRUPTED, USAGE, CommandError, UsageError
from ._output import BrokenPipe, fail, silence_stdout, warnings_as_lines

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tyqw`` command line and return its exit status.

    Example::

        raise SystemExit(main(["ask", "--offline", "你好"]))
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else USAGE
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        with warnings_as_lines():
            return command(args)
    except UsageError as exc:
        fail(str(exc))
        return USAGE
    except CommandError as exc:
        fail(str(exc))
        return ERROR
    except BrokenPipe:
        silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} — see {self.prog} --help")
        raise SystemExit(USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tyqw",
        description="Chat with an Alibaba Cloud Bailian (Model Studio) app from the terminal. "
        "Without DASHSCOPE_API_KEY, chat and ask use a built-in offline simulator.",
        epilog="Environment: DASHSCOPE_API_KEY, DASHSCOPE_APP_ID, DASHSCOPE_BASE_URL "
        "(or DASHSCOPE_HTTP_BASE_URL), DASHSCOPE_WORKSPACE, TYQW_STORE. Flags win over the "
        "environment.",
    )
    parser.add_argument("--version", action="version", version=f"tyqw {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in (chat, ask, conversations, simulate, serve):
        command.add_parser(commands)
    return parser
