"""``tyqw conversations list|clear``: the conversation ids tyqw keeps between runs.

Over any store (``--store``, ``--state-dir`` or ``TYQW_STORE``): a folder's files or a
Redis database's records, listed with ``Store.conversations()``. A conversation is
forgotten under its lock, so a turn running meanwhile on some worker cannot write it
back. ``tyqw sessions`` is an alias (Bailian calls a conversation's id its
``session_id``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from .. import TyqwError
from ..stores import Store, begin_turn, end_turn
from ._common import (
    OK,
    CommandError,
    UsageError,
    close_store,
    event_loop,
    name,
    open_store,
    state_parent,
    text,
)
from ._output import BrokenPipe, error_line, shown, width

Listed = tuple[str, str, dict[str, Any]]


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


async def _listed(store: Store, app_id: str | None = None) -> list[Listed]:
    """Every conversation, most recently used first."""
    found = [c async for c in store.conversations(app_id)]
    found.sort(key=lambda c: _last_used(c[2]), reverse=True)
    return found


def _last_used(record: dict[str, Any]) -> float:
    when = record.get("updated_at")
    return float(when) if isinstance(when, (int, float)) else 0.0


async def _forget(store: Store, doomed: list[Listed]) -> None:
    for app_id, stored_name, _ in doomed:
        held, _ = await begin_turn(store, app_id, stored_name)
        await end_turn(store, held, app_id, stored_name, None)


def list_(args: argparse.Namespace) -> int:
    chosen = open_store(args)
    with event_loop() as loop:
        try:
            conversations = loop.run_until_complete(_listed(chosen.store))
        except TyqwError as exc:
            raise CommandError(error_line(exc)) from None
        finally:
            close_store(loop, chosen)
    if not conversations:
        print(f"tyqw: no stored conversations in {chosen.where}", file=sys.stderr)
        return OK
    rows = [("NAME", "APP ID", "SESSION ID", "LAST USED")]
    rows += [
        (
            shown(stored_name),
            shown(app_id),
            shown(str(record["session_id"])),
            dt.datetime.fromtimestamp(_last_used(record))
            .astimezone()
            .strftime("%Y-%m-%d %H:%M:%S"),
        )
        for app_id, stored_name, record in conversations
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
    chosen = open_store(args)
    with event_loop() as loop:
        try:
            doomed = [
                c
                for c in loop.run_until_complete(_listed(chosen.store, args.app_id))
                if args.all or c[1] == args.name
            ]
            loop.run_until_complete(_forget(chosen.store, doomed))
        except TyqwError as exc:
            raise CommandError(error_line(exc)) from None
        finally:
            close_store(loop, chosen)
    plural = "" if len(doomed) == 1 else "s"
    named = "" if args.all else f" named {args.name!r}"
    print(f"tyqw: forgot {len(doomed)} conversation{plural}{named}", file=sys.stderr)
    return OK
