"""One conversation per end user, all at once: a named ``Session`` each.

A bot serving many people gives each one a ``Session`` with their own ``name``, so each
conversation id is stored apart and survives restarts. The Sessions share one aiohttp
connection pool and run concurrently. Talks to your Bailian app when DASHSCOPE_API_KEY
and DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    .venv/bin/python examples/many_users.py
"""

import asyncio
import os
import sys

import aiohttp

from tyqw import Session, TyqwError
from tyqw.testing import run_offline

USERS = {
    "alice": ["Hello, my name is Alice.", "What's my name?"],
    "bob": ["Hi, call me Bob.", "What's my name?"],
    "xiaohong": ["你好，我叫小红。", "我叫什么名字？"],
}


async def converse(http: aiohttp.ClientSession, user: str, prompts: list[str]) -> list[str]:
    app_id = os.environ["DASHSCOPE_APP_ID"]
    async with Session(app_id, name=f"user-{user}", http_session=http) as session:
        session.clear()  # start this demo from a blank conversation
        return [(await session.send(prompt)).text for prompt in prompts]


async def main() -> None:
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(
            *(converse(http, user, prompts) for user, prompts in USERS.items())
        )
    for (user, prompts), replies in zip(USERS.items(), answers, strict=True):
        print(f"== {user}")
        for prompt, reply in zip(prompts, replies, strict=True):
            print(f"  {user}: {prompt}\n  bot: {reply}")


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
