"""``tyqw chat``: the interactive chat.

Ctrl-C never quits it: during a reply it stops the reply (the text so far stays), at the
prompt it drops the line being typed. Ctrl-D or ``/exit`` quits. With stdin not a
terminal (a pipe, a file), each line is a prompt and Ctrl-C ends the command (status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from .. import Session, TyqwError
from ._common import (
    OK,
    conversation_parent,
    ctrl_c_aborts,
    event_loop,
    lenient,
    open_session,
    service_parent,
    undecodable,
)
from ._output import Printer, error_line
from ._prompt import Prompter
from ._stores import ChosenStore
from ._transcript import recap_lines, text_lines

if TYPE_CHECKING:
    from .._simulator import BailianSimulator

BANNER = "Type a message; /help lists commands. Ctrl-C stops a reply, Ctrl-D or /exit quits."
HELP = """\
/new      start a new conversation (the app forgets the context)
/history  show what was said in this conversation
/session  show the conversation id and where it is stored
/usage    show the tokens this conversation has used, per model
/help     show this help
/exit     quit (or Ctrl-D)
Enter sends. A line ending in \\ continues on the next line; pasted lines are one message.
Ctrl-C during a reply stops it (the text so far stays); while typing, it clears the line."""


def add_parser(commands: Any) -> None:
    chat = commands.add_parser(
        "chat",
        parents=[service_parent(), conversation_parent()],
        help="chat in the terminal (interactive)",
        description="Chat with the app. Replies stream as they arrive; the conversation "
        "continues across runs under the same --name. Type /help for commands.",
    )
    chat.add_argument(
        "--thoughts",
        action="store_true",
        help="show the app's thoughts (with --model: the model thinks, and its reasoning shows)",
    )
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Undecodable input becomes one error line, not a UnicodeDecodeError ending the chat.
    prompter = Prompter(lenient(sys.stdin), sys.stdout)
    printer = Printer(sys.stdout, thoughts=args.thoughts)

    def on_error(error: TyqwError) -> None:
        printer.end_line()
        print(f"error: {error_line(error)}", file=sys.stderr, flush=True)

    with event_loop() as loop, open_session(args, loop) as (session, simulator, chosen):
        session.on("message", printer.message)
        session.on("thought", printer.thought)
        session.on("reference", printer.reference)
        session.on("error", on_error)
        if prompter.interactive:
            print(BANNER, file=sys.stderr, flush=True)
            _recap(loop, session, printer)
        wants = "has_thoughts" if session.model is None else "enable_thinking"
        options: dict[str, Any] = {wants: True} if args.thoughts else {}
        while True:
            try:
                if not _turn(loop, session, simulator, chosen, printer, prompter, options):
                    break
            except KeyboardInterrupt:  # Ctrl-C outside a reply: drop the line
                if not prompter.interactive:
                    raise
                printer.end_line()
                prompter.interrupted()
    return OK


def _turn(
    loop: asyncio.AbstractEventLoop,
    session: Session,
    simulator: BailianSimulator | None,
    chosen: ChosenStore,
    printer: Printer,
    prompter: Prompter,
    options: dict[str, Any],
) -> bool:
    """Read one prompt and answer it; False means quit."""
    prompt = prompter.read()
    if prompt is None:  # Ctrl-D, or the end of the input
        if prompter.interactive:
            print()
        return False
    text = prompt.strip()
    if not text:
        return True
    problem = undecodable(prompt, sys.stdin.encoding or "utf-8")
    if problem:
        print(f"error: the prompt is {problem}; nothing was sent", file=sys.stderr, flush=True)
        return True
    if text.startswith("/") and "\n" not in text:
        return not _command(text, loop, session, simulator, chosen)
    printer.start_turn()
    with ctrl_c_aborts(loop, session) as pressed:
        reply = loop.run_until_complete(session.send(prompt, **options))
    printer.end_line()
    printer.references()
    if pressed and reply.finish_reason is None:  # stopped, not a Ctrl-C just after the end
        print("[stopped]", file=sys.stderr, flush=True)
    return True


def _command(
    text: str,
    loop: asyncio.AbstractEventLoop,
    session: Session,
    simulator: BailianSimulator | None,
    chosen: ChosenStore,
) -> bool:
    """Run a /command; True means quit."""
    name = text.split()[0].lower()
    if name in ("/exit", "/quit"):
        return True
    if name == "/new":
        session.clear()
        print("(new conversation: the app has forgotten the context)", file=sys.stderr)
    elif name == "/session":
        sid = session.session_id or _stored_id(loop, session, chosen)
        print(f"session_id: {sid or 'none yet (the next message starts a conversation)'}")
        target = f"model: {session.model}" if session.model else f"app_id: {session.app_id}"
        print(f"name: {session.name}  {target}")
        if simulator is not None:
            print(f"stored in: {chosen.where}")
            print("(offline: the simulator forgets its conversations when tyqw exits)")
        elif chosen.shared:
            print(f"stored in: {chosen.where} (shared with every process that uses it)")
        else:
            print(f"stored in: {session.store_path}")
    elif name == "/history":
        try:
            exchanges = loop.run_until_complete(session.history())
        except TyqwError as exc:
            print(f"error: {error_line(exc)}", file=sys.stderr)
        else:
            if not exchanges:
                print("nothing said yet in this conversation")
            for line in text_lines(exchanges):
                print(line)
    elif name == "/usage":
        usage = session.usage
        if not usage:
            print("no tokens used yet in this conversation")
        for model, used in usage.items():
            print(f"{model}: {used.input_tokens} input, {used.output_tokens} output tokens")
    elif name in ("/help", "/?"):
        print(HELP)
    else:
        print(f"unknown command {name}; /help lists the commands", file=sys.stderr)
    sys.stdout.flush()
    return False


def _recap(loop: asyncio.AbstractEventLoop, session: Session, printer: Printer) -> None:
    """A resumed conversation: its last few exchanges, dimmed, before the first prompt."""
    try:
        exchanges = loop.run_until_complete(session.history())
    except TyqwError:
        return  # the first turn will say what is wrong with the store
    if exchanges:
        for line in recap_lines(exchanges):
            printer.note(line)


def _stored_id(loop: asyncio.AbstractEventLoop, session: Session, chosen: ChosenStore) -> str:
    """The id a shared store holds (a Session reads it at its first turn), or ""."""
    if not chosen.shared or session.session_id is not None:
        return ""
    try:
        record = loop.run_until_complete(chosen.store.get(session.app_id, session.name))
    except TyqwError as exc:
        return f"unknown ({error_line(exc)})"
    return "" if record is None else str(record["session_id"])
