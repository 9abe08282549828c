"""A terminal chatbot built on events: type a line, watch the reply stream in.

The Python form of the TypeScript ``Tyqw`` usage: subscribe to ``message`` and ``error``
once, then ``send()`` each line. The conversation continues the next time you run it;
``/new`` starts a new one; Ctrl-D or Ctrl-C quits (``tyqw chat`` is the full-featured
version). Talks to your Bailian app when DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set,
and to the simulator otherwise:

    .venv/bin/python examples/chatbot.py
"""

import asyncio
import os
import signal
import sys

from tyqw import Message, Session, TyqwError
from tyqw.testing import run_offline


def show(message: Message) -> None:
    print(message.delta, end="", flush=True)
    if message.finish_reason == "stop":
        print()


def report(error: TyqwError) -> None:
    print(f"\n[error] {error}")


def read_line(prompt: str) -> str | None:
    """The next line typed, or None when the user quits (Ctrl-D or Ctrl-C)."""
    # asyncio.run() turns Ctrl-C into a cancellation, which a blocking input() never
    # sees; while the user types, Ctrl-C interrupts input() instead.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    finally:
        signal.signal(signal.SIGINT, previous)


async def main() -> None:
    async with Session(os.environ["DASHSCOPE_APP_ID"], name="chatbot") as session:
        session.on("message", show)
        session.on("error", report)
        # A blocking read is fine here: nothing else runs between turns.
        while (prompt := read_line("you> ")) is not None:
            if prompt.strip() == "/new":
                session.clear()
                print("(a new conversation)")
            elif prompt.strip():
                print("bot> ", end="")
                await session.send(prompt)


if __name__ == "__main__":
    try:
        if not os.environ.get("DASHSCOPE_API_KEY"):  # no key: the simulator stands in
            asyncio.run(run_offline(main))
        elif os.environ.get("DASHSCOPE_APP_ID"):
            asyncio.run(main())
        else:
            sys.exit("error: set DASHSCOPE_APP_ID to your app's id (on its card in the console)")
    except (ValueError, TyqwError) as exc:  # a setting tyqw refuses, a failed turn
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:  # Ctrl-C
        sys.exit(130)
