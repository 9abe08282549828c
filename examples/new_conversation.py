"""Clearing the context: ``session.clear()`` makes the next turn start a new conversation.

The conversation id is stored on disk, so a new ``Session`` with the same name continues
where the last one stopped, until ``clear()``. Talks to your Bailian app when
DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    .venv/bin/python examples/new_conversation.py
"""

import asyncio
import os
import sys

from tyqw import Session, TyqwError
from tyqw.testing import run_offline


async def ask(session: Session, prompt: str) -> None:
    reply = await session.send(prompt)
    print(f"> {prompt}\n{reply.text}\n  (session {reply.session_id})")


async def main() -> None:
    app_id = os.environ["DASHSCOPE_APP_ID"]
    async with Session(app_id, name="new-conversation") as session:
        session.clear()  # start this demo from a blank conversation
        await ask(session, "你好，我叫小明")
        print(f"stored in {session.store_path}")

    async with Session(app_id, name="new-conversation") as session:
        print("-- a new Session with the same name continues the conversation:")
        await ask(session, "我叫什么名字？")
        session.clear()
        print("-- after clear(), a new conversation:")
        await ask(session, "我叫什么名字？")


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
