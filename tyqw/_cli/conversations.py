"""``tyqw conversations list|show|export|clear|delete``: the conversations tyqw keeps
between runs, and what was said in them.

Over any store (``--store``, ``--state-dir`` or ``TYQW_STORE``): a folder's files or a
Redis database's records, listed with ``Store.conversations()``. A conversation is
forgotten (``clear``, ``delete``: its record and its transcript) under its lock, so a
turn running meanwhile on some worker cannot write it back. ``tyqw sessions`` is an
alias (Bailian calls a conversation's id its ``session_id``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from .. import Exchange, TyqwError
from ..stores import Store, forget, read_history
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
from ._transcript import jsonl_lines, markdown_lines, text_lines

Listed = tuple[str, str, dict[str, Any]]


def add_parser(commands: Any) -> None:
    conversations = commands.add_parser(
        "conversations",
        aliases=["sessions"],
        help="list, show, export or forget stored conversations",
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
    showing = actions.add_parser(
        "show",
        parents=[state_parent(), _named()],
        help="print what was said in a conversation",
        description="Print the transcript of the conversation called NAME, oldest first.",
    )
    showing.set_defaults(run=show)
    exporting = actions.add_parser(
        "export",
        parents=[state_parent(), _named()],
        help="write a conversation's transcript to stdout (JSON lines or Markdown)",
        description="Write the transcript of the conversation called NAME to stdout: "
        "one JSON object per exchange (jsonl, as tyqw.Exchange.to_dict() gives it) or a "
        "Markdown document.",
    )
    exporting.add_argument(
        "--format",
        choices=("jsonl", "markdown"),
        default="jsonl",
        help="jsonl (default) or markdown",
    )
    exporting.set_defaults(run=export)
    deleting = actions.add_parser(
        "delete",
        parents=[state_parent()],
        help="delete a conversation entirely, its transcript included",
        description="Delete the conversations called NAME (of every app, or of --app-id) "
        "from the store: the id and everything said. For a user who asks to be forgotten.",
    )
    deleting.add_argument("name", type=name, metavar="NAME", help="the conversation's --name")
    deleting.add_argument(
        "--app-id", type=text, metavar="ID", help="only conversations with this app"
    )
    deleting.set_defaults(run=delete)


def _named() -> argparse.ArgumentParser:
    """NAME and --app-id, naming one conversation."""
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("name", type=name, metavar="NAME", help="the conversation's --name")
    named.add_argument(
        "--app-id", type=text, metavar="ID", help="the app, when NAME is kept for several"
    )
    return named


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
        await forget(store, app_id, stored_name)


async def _transcript(store: Store, args: argparse.Namespace) -> tuple[str, list[Exchange]]:
    """The app id and the transcript of the one conversation NAME (and --app-id) name."""
    found = [c for c in await _listed(store, args.app_id) if c[1] == args.name]
    if not found:
        where = f" with app {args.app_id}" if args.app_id else ""
        raise CommandError(f"no stored conversation named {args.name!r}{where}")
    apps = sorted({app_id for app_id, _, _ in found})
    if len(apps) > 1:
        raise UsageError(
            f"{args.name!r} is a conversation of several apps ({', '.join(apps)}); pass --app-id"
        )
    return apps[0], await read_history(store, apps[0], args.name)


def _read(args: argparse.Namespace) -> tuple[str, list[Exchange]]:
    chosen = open_store(args)
    with event_loop() as loop:
        try:
            return loop.run_until_complete(_transcript(chosen.store, args))
        except TyqwError as exc:
            raise CommandError(error_line(exc)) from None
        finally:
            close_store(loop, chosen)


def _print(lines: list[str]) -> None:
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise BrokenPipe from None


def show(args: argparse.Namespace) -> int:
    _, exchanges = _read(args)
    if not exchanges:
        print(f"tyqw: nothing said yet in {args.name!r}", file=sys.stderr)
    _print(list(text_lines(exchanges)))
    return OK


def export(args: argparse.Namespace) -> int:
    app_id, exchanges = _read(args)
    if args.format == "markdown":
        _print(list(markdown_lines(app_id, args.name, exchanges)))
    else:
        _print(list(jsonl_lines(exchanges)))
    return OK


def delete(args: argparse.Namespace) -> int:
    chosen = open_store(args)
    with event_loop() as loop:
        try:
            doomed = [
                c
                for c in loop.run_until_complete(_listed(chosen.store, args.app_id))
                if c[1] == args.name
            ]
            loop.run_until_complete(_forget(chosen.store, doomed))
        except TyqwError as exc:
            raise CommandError(error_line(exc)) from None
        finally:
            close_store(loop, chosen)
    if not doomed:
        raise CommandError(f"no stored conversation named {args.name!r}")
    plural = "" if len(doomed) == 1 else "s"
    print(
        f"tyqw: deleted {len(doomed)} conversation{plural} named {args.name!r}, "
        "with everything said in them",
        file=sys.stderr,
    )
    return OK


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
