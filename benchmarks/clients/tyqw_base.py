"""What both tyqw clients share: how their Sessions are opened and closed.

One ``Session`` (one conversation) per concurrent stream, each with its own state dir, or
(``shared_state``) all in one state dir under names of their own, as a backend keeps its
users; concurrent Sessions share one caller-owned ``aiohttp.ClientSession``
(``http_session=``), as an application serving many conversations would. Only ``consume``
differs between them.
"""

from __future__ import annotations

import json
import tempfile

import aiohttp
from scenarios import CORPUS

from clients.base import API_KEY, APP_ID, PROMPT, BenchClient, package_version
from tyqw import Session
from tyqw.stores import FileStore


def seeded_transcript(exchanges: int) -> bytes:
    """A FileStore transcript of ``exchanges`` lines (a reply of ~800 characters each),
    written as tyqw writes it, as a long-lived conversation's file holds it."""
    text = (CORPUS * 8)[:800]
    lines = []
    for n in range(1, exchanges + 1):
        entry = {
            "v": 1,
            "prompt": PROMPT,
            "started_at": "2026-01-01T00:00:00+00:00",
            "ended_at": "2026-01-01T00:00:01+00:00",
            "reply": {"text": text, "session_id": "0" * 32, "finish_reason": "stop"},
        }
        line = {"n": n, "keep": 200, "entry": entry}
        lines.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return b"".join(lines)


class TyqwClient(BenchClient):
    def version(self) -> str:
        return f"tyqw {package_version('tyqw')}"

    async def open(self, slots: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="tyqw-bench-")
        self.sessions: list[Session] = []
        # One stream: tyqw's own HTTP session. Many: one shared pool without a cap.
        self.http = (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) if slots > 1 else None
        )
        for i in range(slots):
            shared = self.shared_state
            session = Session(
                APP_ID,
                api_key=API_KEY,
                base_url=self.base_url,
                name=f"user-{i}" if shared else "default",
                state_dir=self.tmp.name if shared else f"{self.tmp.name}/{i}",
                http_session=self.http,
            )
            await session.__aenter__()
            self.sessions.append(session)
        if self.seed_history:
            seed = seeded_transcript(self.seed_history)
            for i, session in enumerate(self.sessions):
                store = session.store
                assert isinstance(store, FileStore)
                name = f"user-{i}" if self.shared_state else "default"
                path = store.transcript_path(APP_ID, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(seed)

    async def close(self) -> None:
        for session in self.sessions:
            await session.__aexit__(None, None, None)
        if self.http is not None:
            await self.http.close()
        self.tmp.cleanup()
