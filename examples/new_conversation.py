"""Clearing the context: ``session.clear()`` makes the next turn start a new conversation.

The conversation id is stored on disk, so a new ``Session`` with the same name continues
where the last one stopped, until ``clear()``. Talks to your Bailian app when
DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    python examples/new_conversation.py
"""

import asyncio
import os

from tyqw import Session
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
    if os.environ.get("DASHSCOPE_API_KEY"):
        asyncio.run(main())
    else:  # no key: the built-in simulator stands in for Bailian
        asyncio.run(run_offline(main))
