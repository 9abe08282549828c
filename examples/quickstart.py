"""Quickstart: a two-turn conversation streamed as it arrives, then a fresh start.

Talks to your Bailian app when DASHSCOPE_API_KEY and DASHSCOPE_APP_ID are set, and to
tyqw's built-in simulator otherwise:  .venv/bin/python examples/quickstart.py
"""

import asyncio
import os
import sys

from tyqw import Session, TyqwError
from tyqw.testing import run_offline


async def main() -> None:
    app_id = os.environ["DASHSCOPE_APP_ID"]
    async with Session(app_id) as session:  # key from DASHSCOPE_API_KEY
        session.on("message", lambda m: print(m.delta, end="", flush=True))
        await session.send("你好，我叫小明")  # with no "error" handler, errors are raised
        print()
        await session.send("我叫什么名字？")  # same conversation
        print()
        session.clear()  # the next send starts anew


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
