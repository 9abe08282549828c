"""Iterating over a reply with ``async for``: no handlers, errors are raised.

``session.stream()`` yields one ``Message`` per event; ``stream.reply`` is the whole
``Reply`` once the loop ends. Talks to your Bailian app when DASHSCOPE_API_KEY and
DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    python examples/iterate.py
"""

import asyncio
import os

from tyqw import Session, TyqwError
from tyqw.testing import run_offline


async def main() -> None:
    async with Session(os.environ["DASHSCOPE_APP_ID"], name="iterate") as session:
        session.clear()  # start this demo from a blank conversation
        for prompt in ("My name is Ada.", "What's my name?"):
            print(f"> {prompt}")
            try:
                async with session.stream(prompt) as stream:
                    async for message in stream:
                        print(message.delta, end="", flush=True)
            except TyqwError as exc:
                print(f"\nerror: {exc}")
                return
            reply = stream.reply
            tokens = sum(m.get("output_tokens", 0) for m in (reply.usage or {}).get("models", []))
            print(f"\n({reply.finish_reason}, {tokens} output tokens, session {reply.session_id})")


if __name__ == "__main__":
    if os.environ.get("DASHSCOPE_API_KEY"):
        asyncio.run(main())
    else:  # no key: the built-in simulator stands in for Bailian
        asyncio.run(run_offline(main))
