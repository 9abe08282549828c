"""The relay's AI SDK UI message stream at ``POST /api/chat``, read over real sockets.

These tests read the stream's chunks themselves (aiohttp); tests/test_relay_js.py reads
it with the ``ai`` package's own reader and transport under node.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tyqw.testing import BailianSimulator, Fault, default_reply

from .relay_helpers import (
    ALICE,
    BOB,
    BOUND,
    Relay,
    auth,
    connect,
    post,
    post_head,
    until_closed,
)


@pytest.fixture
async def relay(sim: BailianSimulator) -> AsyncIterator[Relay]:
    async with Relay(sim, session_options={"max_retries": 0}) as running:
        yield running


def user(text: str, n: int = 0) -> dict[str, Any]:
    return {"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": text}]}


def assistant(text: str, n: int = 0) -> dict[str, Any]:
    parts = [{"type": "step-start"}, {"type": "text", "text": text, "state": "done"}]
    return {"id": f"a{n}", "role": "assistant", "parts": parts}


async def chat(
    http: aiohttp.ClientSession,
    relay: Relay,
    messages: list[dict[str, Any]],
    chat_id: str = "chat1",
    token: str = ALICE,
    **extra: Any,
) -> list[dict[str, Any]]:
    """POST as DefaultChatTransport does; the stream's chunks, ending in [DONE]."""
    payload = {"id": chat_id, "messages": messages, "trigger": "submit-message", **extra}
    answer = await post(http, f"{relay.root}/api/chat", payload, auth(token))
    assert answer.status == 200, answer.raw
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert answer.headers["Content-Type"] == "text/event-stream"
    blocks = answer.raw.decode().split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [json.loads(block[6:]) for block in blocks[:-2]]


def text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


async def test_stream_has_start_text_and_finish_with_metadata(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A turn is start, start-step, one text part (start, deltas, end), finish-step and
    finish, the session_id and usage in the finish's message metadata."""
    chunks = await chat(http, relay, [user("hello there")])
    types = [c["type"] for c in chunks]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    assert set(types[3:-3]) == {"text-delta"}
    assert text(chunks) == default_reply("hello there", [])
    assert chunks[0]["messageMetadata"]["conversation"] == "chat1"
    metadata = chunks[-1]["messageMetadata"]
    assert metadata["session_id"] == sim.requests[-1].session_id
    assert metadata["usage"]["output_tokens"] == len(default_reply("hello there", []))
    assert chunks[-1]["finishReason"] == "stop"


async def test_the_chat_id_names_the_conversation(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The second turn of a chat continues its session; another chat id with the same
    messages does not; a regenerated answer goes on from the client's history, in the
    same chat's conversation."""
    first = text(await chat(http, relay, [user("my name is Ada")]))
    session_id = sim.requests[-1].session_id
    history = [user("my name is Ada"), assistant(first), user("what's my name?", 1)]
    assert "Ada" in text(await chat(http, relay, history))
    assert sim.requests[-1].body["input"]["session_id"] == session_id
    assert "messages" not in sim.requests[-1].body["input"]

    await chat(http, relay, history, chat_id="chat2")
    assert sim.requests[-1].body["input"].get("session_id") != session_id
    assert "messages" in sim.requests[-1].body["input"]

    regenerated = await chat(http, relay, history, trigger="regenerate-message", messageId="a1")
    assert "Ada" in text(regenerated)
    sent = sim.requests[-1].body["input"]
    assert sent["messages"][0]["content"] == "my name is Ada"
    # The chat stays one conversation (its record and transcript are kept, not cleared).
    assert sent["session_id"] == session_id


async def test_another_user_reaches_nothing_of_a_chat(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Bob posting Alice's chat id and history gets no turn of Alice's conversation."""
    first = text(await chat(http, relay, [user("my name is Ada")]))
    session_id = sim.requests[-1].session_id
    history = [user("my name is Ada"), assistant(first), user("hi", 1)]
    chunks = await chat(http, relay, history, token=BOB)
    assert sim.requests[-1].body["input"].get("session_id") != session_id
    assert chunks[-1]["messageMetadata"]["session_id"] != session_id


async def test_reasoning_sources_and_workflow_parts(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Thoughts come as a reasoning part before the text, cited documents as
    source-document parts, workflow node events as data-workflow parts."""
    sim.reasoning = True
    options = {"rag_options": {"pipeline_ids": ["kb1"]}}
    async with Relay(sim, turn_options=options) as relay:
        chunks = await chat(http, relay, [user("what is tyqw?")])
    types = [c["type"] for c in chunks]
    order = [types.index(kind) for kind in ("reasoning-start", "reasoning-end", "text-start")]
    assert order == sorted(order)
    reasoning = "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta")
    assert "what is tyqw?" in reasoning
    assert "<ref>" not in text(chunks)
    documents = [c for c in chunks if c["type"] == "source-document"]
    assert documents and all(d["sourceId"] in text(chunks) for d in documents)
    assert all(d["providerMetadata"]["tyqw"]["excerpt"] for d in documents)

    async with Relay(sim, turn_options={"flow_stream_mode": "message_format"}) as relay:
        chunks = await chat(http, relay, [user("hello there")])
    nodes = [c for c in chunks if c["type"] == "data-workflow"]
    assert nodes and nodes[-1]["data"]["completed"] is True
    assert {n["id"] for n in nodes} == {"LLM_1"}


async def test_failures_are_error_parts_and_refusals_plain_errors(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An upstream failure mid-stream is an error part and a finish; a wrong token and
    a malformed body are HTTP errors whose text says what is wrong."""
    sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
    chunks = await chat(http, relay, [user("hello there")])
    types = [c["type"] for c in chunks]
    assert types[-3:] == ["error", "finish-step", "finish"]
    assert "inappropriate" in chunks[-3]["errorText"]
    assert text(chunks)  # the text that came first is kept
    assert "text-end" in types  # every opened part is closed

    payload = {"id": "c", "messages": [user("hi")]}
    answer = await post(http, f"{relay.root}/api/chat", payload, auth("wrong-token-123456789"))
    assert answer.status == 401 and b"relay token" in answer.raw
    answer = await post(http, f"{relay.root}/api/chat", {"messages": []}, auth())
    assert answer.status == 400 and b"id" in answer.raw
    hostile = {"id": "c", "messages": [{"role": {"x": 1}, "parts": []}]}
    answer = await post(http, f"{relay.root}/api/chat", hostile, auth())
    assert answer.status == 400 and b"role" in answer.raw


async def test_resume_answers_nothing_to_resume(relay: Relay, http: aiohttp.ClientSession) -> None:
    """GET /api/chat/{id}/stream is 204 for a user (nothing is kept to replay), 401 without."""
    async with http.get(f"{relay.root}/api/chat/chat1/stream", headers=auth()) as response:
        assert response.status == 204
    async with http.get(f"{relay.root}/api/chat/chat1/stream") as response:
        assert response.status == 401


BAD_VALUES: list[Any] = [None, 0, 1.5, True, "", "x", [], [1], {}, {"a": 1}, [{"type": 1}]]


def _mutations(valid: dict[str, Any]) -> list[Any]:
    """``valid`` with each value anywhere in it replaced by each of ``BAD_VALUES``."""
    found: list[Any] = []

    def walk(node: Any, rebuild: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            for bad in BAD_VALUES:
                copy = json.loads(json.dumps(node))
                copy[key] = bad
                found.append(rebuild(copy))
            if isinstance(value, (dict, list)):
                walk(value, lambda inner, key=key, node=node: rebuild(_put(node, key, inner)))

    walk(valid, lambda whole: whole)
    return found


def _put(node: Any, key: Any, inner: Any) -> Any:
    copy = json.loads(json.dumps(node))
    copy[key] = inner
    return copy


async def test_no_request_body_makes_either_dialect_fail(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """Every field of a valid request, replaced by each wrong kind of value: the answer is
    a success or a 4xx, never a server error."""
    model = relay.app_ids[0]
    openai_body = {
        "model": model,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
            {"role": "user", "content": "hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ui_body = {
        "id": "c1",
        "model": model,
        "messages": [user("hi"), assistant("yes"), user("hello", 1)],
        "trigger": "submit-message",
    }
    for path, valid in (("/v1/chat/completions", openai_body), ("/api/chat", ui_body)):
        for payload in _mutations(valid):
            answer = await post(http, f"{relay.root}{path}", payload, auth())
            assert answer.status < 500, (path, payload, answer.raw)


async def test_a_user_name_holding_a_nul_is_refused(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An authenticate hook naming a user "bob<NUL>chat<NUL>x" could reach into another
    user's conversations by name: both dialects refuse it before any turn."""
    async with Relay(sim, authenticate=lambda request: "alice\0chat\0c1") as relay:
        answer = await post(http, f"{relay.root}/api/chat", {"id": "c", "messages": []}, auth())
        assert answer.status == 403
        payload = {"model": relay.app_ids[0], "messages": [{"role": "user", "content": "hi"}]}
        answer = await post(http, f"{relay.root}/v1/chat/completions", payload, auth())
        assert answer.status == 403
    assert sim.requests == []


def _dialect_request(path: str, model: str, prompt: str) -> bytes:
    if path == "/api/chat":
        return json.dumps({"id": "c", "messages": [user(prompt)]}).encode()
    messages = [{"role": "user", "content": prompt}]
    return json.dumps({"model": model, "messages": messages, "stream": True}).encode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_a_dialect_body_that_stops_arriving_is_a_408(
    sim: BailianSimulator, path: str
) -> None:
    """A body announced and never finished: 408 within body_timeout, the connection
    closed, nothing sent to the service."""
    async with Relay(sim, body_timeout=0.5) as relay:
        reader, writer = await connect(relay)
        writer.write(post_head(relay, path, 1000) + b'{"messages":[')
        answer = await until_closed(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"0.5s" in answer
    assert sim.requests == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_a_dialect_client_that_stops_reading_is_dropped(
    sim: BailianSimulator, http: aiohttp.ClientSession, path: str
) -> None:
    """A client that stops reading a long answer is dropped within send_timeout, the
    upstream request closed, and the user's next turn runs at once."""
    arrived = asyncio.Event()

    def reply(prompt: str, history: list[tuple[str, str]]) -> str:
        arrived.set()
        return "x" * 16_000_000  # far past what the sockets' buffers hold

    sim.reply = reply
    sim.chunk_size = 100_000
    async with Relay(sim, send_timeout=0.5) as relay:
        reader, writer = await connect(relay, receive_buffer=4096)
        payload = _dialect_request(path, relay.app_ids[0], "tell me everything")
        writer.write(post_head(relay, path, len(payload)) + payload)
        await asyncio.wait_for(arrived.wait(), BOUND)
        upstream = sim.requests[-1]
        await asyncio.wait_for(upstream.done.wait(), BOUND)  # the relay gave the turn up
        assert upstream.disconnected
        sim.reply = lambda prompt, history: "short"
        chunks = await asyncio.wait_for(chat(http, relay, [user("hello")], chat_id="c2"), BOUND)
        assert text(chunks) == "short"
        await until_closed(reader)  # what it had not read, then the end
        writer.close()


async def test_dialect_chats_are_the_users_named_conversations(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """A useChat chat and an OpenAI conversation are listed among the user's
    conversations with their transcripts (the page shows them); another user sees none."""
    first = text(await chat(http, relay, [user("my name is Ada")], chat_id="ui-chat"))
    history = [user("my name is Ada"), assistant(first), user("what's my name?", 1)]
    await chat(http, relay, history, chat_id="ui-chat")
    payload = {"model": relay.app_ids[0], "messages": [{"role": "user", "content": "hi"}]}
    answer = await post(http, f"{relay.root}/v1/chat/completions", payload, auth())
    key = answer.headers["X-Tyqw-Conversation"]
    listing = f"{relay.base_url}/apps/{relay.app_ids[0]}/conversations"
    async with http.get(listing, headers=auth()) as response:
        listed = await response.json()
    assert [c["id"] for c in listed["conversations"]] == [key, "ui-chat"]
    async with http.get(f"{listing}/ui-chat", headers=auth()) as response:
        read = await response.json()
    assert [e["prompt"] for e in read["exchanges"]] == ["my name is Ada", "what's my name?"]
    async with http.get(listing, headers=auth(BOB)) as response:
        assert (await response.json())["conversations"] == []
