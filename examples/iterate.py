"""Iterating over a reply with ``async for``: no handlers, errors are raised.

``session.stream()`` yields one ``Message`` per event; ``stream.reply`` is the whole
``Reply`` once the loop ends. Talks to your Bailian app when DASHSCOPE_API_KEY and
DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    .venv/bin/python examples/iterate.py
"""

import asyncio
import os
import sys

from tyqw import Session, TyqwError
from tyqw.testing import run_offline


async def main() -> None:
    async with Session(os.environ["DASHSCOPE_APP_ID"], name="iterate") as session:
        session.clear()  # start this demo from a blank conversation
        for prompt in ("My name is Ada.", "What's my name?"):
            print(f"> {prompt}")
            async with session.stream(prompt) as stream:  # a failed turn raises
                async for message in stream:
                    print(message.delta, end="", flush=True)
            reply = stream.reply
            tokens = sum(m.get("output_tokens", 0) for m in (reply.usage or {}).get("models", []))
            print(f"\n({reply.finish_reason}, {tokens} output tokens, session {reply.session_id})")


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
