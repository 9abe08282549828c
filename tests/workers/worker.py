"""A chatbot worker for the many-workers tests: turns in, replies out, over a pipe.

``python worker.py STORE BASE_URL API_KEY APP_ID [LEASE]`` where STORE is a folder
(``FileStore``) or a ``redis://`` URL (``RedisStore``). It keeps one ``Session`` per end
user, as a bot behind a load balancer does, and runs every request at once in its own
task. Each stdin line is ``{"id", "user", "prompt"}``; each stdout line answers one:
``{"id", "worker", "session_id", "text", "usage"}`` (``worker``: its pid) or
``{"id", "error", "message", "reply"}``, where ``reply`` says whether the failed turn's
error carries a reply from the service.
The first line it writes is ``{"ready": pid}``; it leaves when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from tyqw import Session, TyqwError
from tyqw.stores import FileStore, Store


def open_store(where: str, lease: float) -> Store:
    if where.startswith("redis://"):
        from tyqw.stores import RedisStore

        return RedisStore.from_url(where, lease=lease)
    return FileStore(where)


async def main(where: str, base_url: str, api_key: str, app_id: str, lease: float) -> None:
    store = open_store(where, lease)
    sessions: dict[str, Session] = {}
    running: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def answer(line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def turn(http: aiohttp.ClientSession, request: dict[str, Any]) -> None:
        user = request["user"]
        session = sessions.get(user)
        if session is None:
            session = sessions[user] = Session(
                app_id,
                api_key=api_key,
                base_url=base_url,
                name=user,
                store=store,
                http_session=http,
            )
        try:
            reply = await session.send(request["prompt"])
        except TyqwError as exc:
            carried = exc.reply is not None and exc.reply.request_id is not None
            answer(
                {
                    "id": request["id"],
                    "error": type(exc).__name__,
                    "message": str(exc),
                    "reply": carried,
                }
            )
            return
        usage = {model: [u.input_tokens, u.output_tokens] for model, u in session.usage.items()}
        answer(
            {
                "id": request["id"],
                "worker": os.getpid(),
                "session_id": reply.session_id,
                "text": reply.text,
                "usage": usage,
            }
        )

    async with aiohttp.ClientSession() as http:
        answer({"ready": os.getpid()})
        while line := await stdin.readline():
            task = asyncio.create_task(turn(http, json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        for session in sessions.values():
            await session.aclose()
    await store.aclose()


if __name__ == "__main__":
    where, base_url, api_key, app_id, *rest = sys.argv[1:]
    asyncio.run(main(where, base_url, api_key, app_id, float(rest[0]) if rest else 30.0))
