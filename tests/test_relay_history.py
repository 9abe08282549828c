"""The relay's ``GET /api/v1/apps/{app_id}/history``: the caller's own current
conversation (its id and transcript), for the chat page to draw on load; never another
user's. Over real sockets: aiohttp client, relay, simulator. The page drawing it in
Chromium is in ``test_relay_browser.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw import Exchange
from tyqw.testing import BailianSimulator

from .relay_helpers import ALICE, BOB, BOUND, Relay, auth, body, post


async def history(
    http: aiohttp.ClientSession, relay: Relay, headers: dict[str, str], app_id: str | None = None
) -> tuple[int, Any]:
    url = f"{relay.base_url}/apps/{app_id or relay.app_ids[0]}/history"
    async with http.get(url, headers=headers) as response:
        return response.status, await asyncio.wait_for(response.json(), BOUND)


@pytest.mark.parametrize("store", ["memory", "folder"])
async def test_history_is_the_callers_own_current_conversation(
    sim: BailianSimulator, http: aiohttp.ClientSession, tmp_path: Path, store: str
) -> None:
    """Alice gets her exchanges and current id, oldest first; Bob, another user, gets
    nothing of hers; a new conversation (no session_id) replaces what is shown."""
    chosen = "memory" if store == "memory" else str(tmp_path / "state")
    async with Relay(sim, store=chosen) as relay:
        status, empty = await history(http, relay, auth(ALICE))
        assert (status, empty) == (200, {"session_id": None, "exchanges": []})
        first = (await post(http, relay.url(), body("my name is Ada"), auth(ALICE))).json
        session_id = first["output"]["session_id"]
        await post(http, relay.url(), body("what's my name?", session_id), auth(ALICE))

        status, current = await history(http, relay, auth(ALICE))
        assert status == 200
        assert current["session_id"] == session_id
        exchanges = [Exchange.from_dict(e) for e in current["exchanges"]]
        assert [e.prompt for e in exchanges] == ["my name is Ada", "what's my name?"]
        assert exchanges[1].reply.text.startswith("Your name is Ada")

        status, bobs = await history(http, relay, auth(BOB))
        assert (status, bobs) == (200, {"session_id": None, "exchanges": []})

        await post(http, relay.url(), body("hello"), auth(ALICE))  # a new conversation
        status, current = await history(http, relay, auth(ALICE))
        assert [e["prompt"] for e in current["exchanges"]] == ["hello"]
        assert current["session_id"] not in (None, session_id)


async def test_history_needs_the_same_authentication_as_a_turn(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """No token or a wrong one is 401; an app the relay does not serve is 404; another
    site's origin is 403."""
    async with Relay(sim) as relay:
        await post(http, relay.url(), body("my name is Ada"), auth(ALICE))
        for headers in ({}, auth("wrong-token-0123456789")):
            status, error = await history(http, relay, headers)
            assert (status, error["code"]) == (401, "InvalidApiKey")
        status, error = await history(http, relay, auth(ALICE), app_id="another-app")
        assert (status, error["code"]) == (404, "NotFound")
        status, error = await history(http, relay, auth(ALICE, Origin="https://evil.example"))
        assert (status, error["code"]) == (403, "AccessDenied")
