"""Quickstart: a two-turn conversation streamed as it arrives, then a fresh start.

Talks to your Bailian app when DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set, and to
tyqw's built-in simulator otherwise:  python examples/quickstart.py
"""

import asyncio
import os

from tyqw import Session
from tyqw.testing import run_offline


async def main() -> None:
    app_id = os.environ["DASHSCOPE_APP_ID"]
    async with Session(app_id) as session:  # key from DASHSCOPE_API_KEY
        session.on("message", lambda m: print(m.delta, end="", flush=True))
        session.on("error", lambda e: print("\nerror:", e))
        await session.send("你好，我叫小明")
        print()
        await session.send("我叫什么名字？")  # same conversation
        print()
        session.clear()  # the next send starts anew


if __name__ == "__main__":
    if os.environ.get("DASHSCOPE_API_KEY"):
        asyncio.run(main())
    else:  # no key: the built-in simulator stands in for Bailian
        asyncio.run(run_offline(main))
