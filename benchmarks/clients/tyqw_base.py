"""What both tyqw clients share: how their Sessions are opened and closed.

One ``Session`` (one conversation) per concurrent stream, each with its own state dir, or
(``shared_state``) all in one state dir under names of their own, as a backend keeps its
users; concurrent Sessions share one caller-owned ``aiohttp.ClientSession``
(``http_session=``), as an application serving many conversations would. Only ``consume``
differs between them.
"""

from __future__ import annotations

import tempfile

import aiohttp

from clients.base import API_KEY, APP_ID, BenchClient, package_version
from tyqw import Session


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

    async def close(self) -> None:
        for session in self.sessions:
            await session.__aexit__(None, None, None)
        if self.http is not None:
            await self.http.close()
        self.tmp.cleanup()
