"""A terminal chatbot built on events: type a line, watch the reply stream in.

The Python form of the TypeScript ``Tyqw`` usage: subscribe to ``message`` and ``error``
once, then ``send()`` each line. The conversation continues the next time you run it;
``/new`` starts a new one, Ctrl-D quits (``tyqw chat`` is the full-featured version).
Talks to your Bailian app when DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set, and to
the simulator otherwise:

    python examples/chatbot.py
"""

import asyncio
import os

from tyqw import Message, Session, TyqwError
from tyqw.testing import run_offline


def show(message: Message) -> None:
    print(message.delta, end="", flush=True)
    if message.finish_reason == "stop":
        print()


def report(error: TyqwError) -> None:
    print(f"\n[error] {error}")


async def main() -> None:
    async with Session(os.environ["DASHSCOPE_APP_ID"], name="chatbot") as session:
        session.on("message", show)
        session.on("error", report)
        while True:
            try:
                # A blocking read is fine here: nothing else runs between turns.
                prompt = input("you> ")  # noqa: ASYNC250
            except EOFError:
                print()
                return
            if prompt.strip() == "/new":
                session.clear()
                print("(a new conversation)")
            elif prompt.strip():
                print("bot> ", end="")
                await session.send(prompt)


if __name__ == "__main__":
    if os.environ.get("DASHSCOPE_API_KEY"):
        asyncio.run(main())
    else:  # no key: the built-in simulator stands in for Bailian
        asyncio.run(run_offline(main))
