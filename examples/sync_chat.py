"""A terminal chat without asyncio: ``SyncSession`` in a plain script.

Each line you type is sent and the reply streams in as it arrives. Ctrl-C during a reply
stops it (``session.last_reply`` keeps what arrived) and the chat goes on; ``/new``
starts a new conversation; Ctrl-D quits. Talks to your Bailian app when DASHSCOPE_API_KEY
and DASHSCOPE_APP_ID are set, and to the simulator otherwise:

    .venv/bin/python examples/sync_chat.py
"""

import asyncio
import os
import threading

from tyqw import SyncSession, TyqwError
from tyqw.testing import run_offline


def main() -> None:
    with SyncSession(os.environ["DASHSCOPE_APP_ID"], name="sync-chat") as session:
        while True:
            try:
                prompt = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return
            if prompt == "/new":
                session.clear()
                print("(a new conversation)")
            elif prompt:
                print("bot> ", end="", flush=True)
                try:
                    for message in session.stream(prompt):
                        print(message.delta, end="", flush=True)
                except KeyboardInterrupt:
                    print(" [stopped]", end="")
                except TyqwError as exc:
                    print(f"[error] {exc}", end="")
                print()


def serve_offline() -> None:
    """No key: run tyqw's simulator of Bailian (an asyncio server) on a daemon thread."""
    ready = threading.Event()

    async def until_exit() -> None:  # meanwhile DASHSCOPE_* name the simulator
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(run_offline(until_exit),), daemon=True).start()
    ready.wait()


if __name__ == "__main__":
    if not os.environ.get("DASHSCOPE_API_KEY"):
        serve_offline()
    main()
