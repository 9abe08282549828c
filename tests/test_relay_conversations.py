"""Named conversations at the relay: several per user, each its own Bailian session,
listed, read and deleted only by their user (``X-Tyqw-Conversation`` and
``/api/v1/apps/{app_id}/conversations``), beside the one conversation of old."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw.testing import BailianSimulator

from .helpers import docs_python_blocks, env_without, run_python
from .relay_helpers import ALICE, BOB, BOUND, Relay, auth, body, post


async def turn(
    http: aiohttp.ClientSession,
    relay: Relay,
    prompt: str,
    conversation: str | None = None,
    session_id: str | None = None,
    token: str = ALICE,
) -> dict[str, Any]:
    """One non-streamed turn through the relay; the answer's JSON."""
    headers = auth(token)
    if conversation is not None:
        headers["X-Tyqw-Conversation"] = conversation
    answer = await post(http, relay.url(), body(prompt, session_id), headers)
    assert answer.status == 200, answer.raw
    result: dict[str, Any] = answer.json
    return result


async def get(
    http: aiohttp.ClientSession, url: str, token: str = ALICE, method: str = "GET"
) -> tuple[int, Any]:
    async with http.request(method, url, headers=auth(token)) as response:
        raw = await asyncio.wait_for(response.read(), BOUND)
        return response.status, (await response.json() if raw else None)


def conversations_url(relay: Relay, conversation: str = "") -> str:
    url = f"{relay.base_url}/apps/{relay.app_ids[0]}/conversations"
    return f"{url}/{conversation}" if conversation else url


async def test_each_named_conversation_remembers_only_itself(
    relay: Relay, http: aiohttp.ClientSession, sim: BailianSimulator
) -> None:
    """Two conversations of one user, each continued with its own session_id, keep
    apart what each was told."""
    first = await turn(http, relay, "my name is Ada", "c-ada")
    second = await turn(http, relay, "my name is Bob", "c-bob")
    ada, bob = first["output"]["session_id"], second["output"]["session_id"]
    assert ada != bob
    asked = await turn(http, relay, "what's my name?", "c-ada", ada)
    assert asked["output"]["text"].startswith("Your name is Ada")
    assert sim.requests[-1].body["input"]["session_id"] == ada
    asked = await turn(http, relay, "what's my name?", "c-bob", bob)
    assert asked["output"]["text"].startswith("Your name is Bob")


async def test_a_client_that_names_no_conversation_keeps_the_users_one(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """Without the header the relay keeps the user's one conversation as before, apart
    from the named ones, which it does not list."""
    first = await turn(http, relay, "my name is Ada")
    await turn(http, relay, "my name is Bob", "c-bob")
    asked = await turn(http, relay, "what's my name?", None, first["output"]["session_id"])
    assert asked["output"]["text"].startswith("Your name is Ada")
    status, listed = await get(http, conversations_url(relay))
    assert status == 200
    assert [c["id"] for c in listed["conversations"]] == ["c-bob"]


async def test_the_list_and_a_transcript_are_the_callers_own(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """Alice lists her conversations newest first, titled by their first prompt, and
    reads one's transcript; Bob sees none of them and cannot read hers, even by id."""
    await turn(http, relay, "my name is Ada", "c-one")
    first = await turn(http, relay, "hello   there\nfriend", "c-two")
    await turn(http, relay, "and again", "c-two", first["output"]["session_id"])
    status, listed = await get(http, conversations_url(relay))
    assert status == 200
    assert [(c["id"], c["title"]) for c in listed["conversations"]] == [
        ("c-two", "hello there friend"),
        ("c-one", "my name is Ada"),
    ]
    status, read = await get(http, conversations_url(relay, "c-two"))
    assert status == 200
    assert read["session_id"] == first["output"]["session_id"]
    assert [e["prompt"] for e in read["exchanges"]] == ["hello   there\nfriend", "and again"]
    assert read["exchanges"][0]["reply"]["text"] == first["output"]["text"]
    assert await get(http, conversations_url(relay), BOB) == (200, {"conversations": []})
    status, refused = await get(http, conversations_url(relay, "c-two"), BOB)
    assert status == 404 and "exchanges" not in refused


async def test_bob_cannot_continue_or_delete_alices_conversation(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """Bob naming Alice's conversation id reaches a conversation of his own: her
    session_id is refused, and his delete leaves hers as it was."""
    alice = await turn(http, relay, "my name is Ada", "shared-id")
    session_id = alice["output"]["session_id"]
    headers = auth(BOB, **{"X-Tyqw-Conversation": "shared-id"})
    answer = await post(http, relay.url(), body("what's my name?", session_id), headers)
    assert answer.status == 400
    status, _ = await get(http, conversations_url(relay, "shared-id"), BOB, "DELETE")
    assert status == 204
    status, read = await get(http, conversations_url(relay, "shared-id"))
    assert status == 200 and read["session_id"] == session_id


async def test_deleting_a_conversation_forgets_it(
    relay: Relay, http: aiohttp.ClientSession, sim: BailianSimulator
) -> None:
    """After a delete the conversation is gone from the list and cannot be read, its
    old session_id is refused, and a turn without one starts it afresh."""
    first = await turn(http, relay, "my name is Ada", "c-gone")
    assert (await get(http, conversations_url(relay, "c-gone"), method="DELETE"))[0] == 204
    assert await get(http, conversations_url(relay)) == (200, {"conversations": []})
    assert (await get(http, conversations_url(relay, "c-gone")))[0] == 404
    headers = auth(ALICE, **{"X-Tyqw-Conversation": "c-gone"})
    stale = body("what's my name?", first["output"]["session_id"])
    assert (await post(http, relay.url(), stale, headers)).status == 400
    fresh = await turn(http, relay, "what's my name?", "c-gone")
    assert "haven't told me your name" in fresh["output"]["text"]
    assert "session_id" not in sim.requests[-1].body["input"]


@pytest.mark.parametrize(
    "conversation",
    ["", "has space", "a/b", "x" * 65, "ünï", "a\u0000b"],
    ids=["empty", "space", "slash", "too-long", "non-ascii", "nul"],
)
async def test_a_conversation_id_that_is_not_a_plain_name_is_refused(
    relay: Relay, http: aiohttp.ClientSession, sim: BailianSimulator, conversation: str
) -> None:
    """A conversation id outside 1-64 letters, digits, '-' and '_' is a 400 before any
    request reaches the service."""
    headers = {"Authorization": f"Bearer {ALICE}", "X-Tyqw-Conversation": conversation}
    try:
        answer = await post(http, relay.url(), body("hi"), headers)
    except ValueError:  # aiohttp itself refuses to send a NUL in a header
        assert conversation == "a\u0000b"
        return
    assert answer.status == 400
    assert sim.requests == []
    if conversation == "a\u0000b" and b"Invalid header value" in answer.raw:
        return  # an older aiohttp server refuses the NUL itself, before the relay
    assert "conversation id" in answer.json["message"]


async def test_a_user_name_holding_a_nul_is_refused(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An authenticate hook naming a user "alice<NUL>conversation<NUL>c" could spell
    alice's conversation: the relay refuses that user before any turn or listing."""
    async with Relay(sim, authenticate=lambda request: "alice\0conversation\0c") as relay:
        answer = await post(http, relay.url(), body("hi"), auth())
        assert answer.status == 403
        assert (await get(http, conversations_url(relay)))[0] == 403
    assert sim.requests == []


def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    """docs/chat-page.md's Python example runs on the offline simulator and prints two
    conversations, newest first, and the first one's exchange."""
    [block] = docs_python_blocks("chat-page.md")
    env = env_without("DASHSCOPE_", "TYQW_")
    env["XDG_STATE_HOME"] = str(tmp_path)
    done = run_python(block, cwd=tmp_path, env=env, flags=["-W", "error"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2] == "[('work', 'hello'), ('trip', 'my name is Ada')]"
    assert lines[3].startswith("my name is Ada -> Nice to meet you, Ada!")
