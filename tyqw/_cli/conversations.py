"""``tyqw conversations list|clear``: the conversation ids tyqw keeps between runs.

The SDK's ``stored_conversations()`` on the command line; ``tyqw sessions`` is an alias
(Bailian calls a conversation's id its ``session_id``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import stored_conversations
from .._store import default_state_dir
from ._common import OK, UsageError, name, state_parent, text
from ._output import BrokenPipe, shown, width


def add_parser(commands: Any) -> None:
    conversations = commands.add_parser(
        "conversations",
        aliases=["sessions"],
        help="list or forget stored conversations",
        description="The conversation ids tyqw keeps between runs, one per app and --name.",
    )
    actions = conversations.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", parents=[state_parent()], help="name, app id, session id and last use of each"
    )
    listing.set_defaults(run=list_)
    clearing = actions.add_parser(
        "clear",
        parents=[state_parent()],
        help="forget a conversation (its next turn starts anew)",
        description="Forget the conversations called NAME (of every app, or of --app-id), "
        "or all of them with --all.",
    )
    clearing.add_argument(
        "name", nargs="?", type=name, metavar="NAME", help="the conversation's --name"
    )
    clearing.add_argument("--all", action="store_true", help="forget every stored conversation")
    clearing.add_argument(
        "--app-id", type=text, metavar="ID", help="only conversations with this app"
    )
    clearing.set_defaults(run=clear)


def list_(args: argparse.Namespace) -> int:
    conversations = stored_conversations(args.state_dir)
    if not conversations:
        where = args.state_dir or default_state_dir()
        print(f"tyqw: no stored conversations in {where}", file=sys.stderr)
        return OK
    rows = [("NAME", "APP ID", "SESSION ID", "LAST USED")]
    rows += [
        (
            shown(c.name),
            shown(c.app_id),
            shown(c.session_id),
            c.last_used.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        )
        for c in conversations
    ]
    widths = [max(width(row[i]) for row in rows) for i in range(3)]
    try:
        for row in rows:
            cells = [
                cell + " " * (w - width(cell)) for cell, w in zip(row[:3], widths, strict=True)
            ]
            print("  ".join([*cells, row[3]]), flush=True)
    except BrokenPipeError:
        raise BrokenPipe from None
    return OK


def clear(args: argparse.Namespace) -> int:
    if args.all == (args.name is not None):
        raise UsageError("clear needs a NAME or --all (not both)")
    doomed = [
        c
        for c in stored_conversations(args.state_dir)
        if (args.all or c.name == args.name) and args.app_id in (None, c.app_id)
    ]
    for conversation in doomed:
        conversation.delete()
    plural = "" if len(doomed) == 1 else "s"
    named = "" if args.all else f" named {args.name!r}"
    print(f"tyqw: forgot {len(doomed)} conversation{plural}{named}", file=sys.stderr)
    return OK
