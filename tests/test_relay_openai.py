"""The relay's OpenAI Chat Completions dialect, read by the official ``openai`` SDK.

The relay and the simulator run in the test's event loop on 127.0.0.1; the async client
runs there too, the sync client in a thread. Every check is on what a user of the SDK
sees, and on what reached the simulator (``sim.requests``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

import tyqw.relay._dialect
from tyqw.testing import BailianSimulator, Fault, default_reply

from .relay_helpers import ALICE, BOB, BOUND, Relay, post


@pytest.fixture
async def relay(sim: BailianSimulator) -> AsyncIterator[Relay]:
    async with Relay(sim, session_options={"max_retries": 0}) as running:
        yield running


def client(relay: Relay, token: str = ALICE) -> Any:
    return openai.AsyncOpenAI(
        base_url=f"{relay.root}/v1", api_key=token, max_retries=0, timeout=BOUND
    )


def sync_client(relay: Relay, token: str = ALICE) -> Any:
    return openai.OpenAI(base_url=f"{relay.root}/v1", api_key=token, max_retries=0, timeout=BOUND)


def said(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in pairs]


async def ask(relay: Relay, messages: list[dict[str, str]], token: str = ALICE) -> str:
    async with client(relay, token) as api:
        answer = await api.chat.completions.create(model=relay.app_ids[0], messages=messages)
    content: str = answer.choices[0].message.content
    return content


async def test_sync_client_streams_the_reply_with_role_first_and_done(
    relay: Relay, sim: BailianSimulator
) -> None:
    """openai.OpenAI streams the simulator's reply: the role in the first delta, text
    as delta.content, a stop finish, and no usage chunk unless asked for."""

    def call() -> list[Any]:
        with sync_client(relay) as api:
            stream = api.chat.completions.create(
                model=relay.app_ids[0], messages=said(("user", "hello there")), stream=True
            )
            return list(stream)

    chunks = await asyncio.to_thread(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == default_reply("hello there", [])
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert sim.requests[-1].body["input"]["prompt"] == "hello there"


async def test_sync_client_whole_answer_has_content_and_usage(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A non-streamed completion is one chat.completion with the reply and token usage."""

    def call() -> Any:
        with sync_client(relay) as api:
            return api.chat.completions.create(
                model=relay.app_ids[0], messages=said(("user", "hello there"))
            )

    answer = await asyncio.to_thread(call)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == default_reply("hello there", [])
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


async def test_async_client_stream_reports_usage_when_asked(relay: Relay) -> None:
    """openai.AsyncOpenAI with stream_options.include_usage gets a last chunk with empty
    choices and the turn's token counts."""
    async with client(relay) as api:
        stream = await api.chat.completions.create(
            model=relay.app_ids[0],
            messages=said(("user", "hello there")),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(default_reply("hello there", []))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == default_reply("hello there", [])


async def test_async_client_whole_answer(relay: Relay) -> None:
    """openai.AsyncOpenAI without streaming gets the whole reply."""
    assert await ask(relay, said(("user", "hello there"))) == default_reply("hello there", [])


async def test_three_turns_continue_one_conversation(relay: Relay, sim: BailianSimulator) -> None:
    """A client resending its whole history: turns 2 and 3 reach the app as the prompt
    alone with turn 1's session_id, and the app remembers what turn 1 said."""
    history = said(("user", "my name is Ada"))
    first = await ask(relay, history)
    session_id = sim.requests[-1].session_id
    history += said(("assistant", first), ("user", "hello again"))
    second = await ask(relay, history)
    history += said(("assistant", second), ("user", "what's my name?"))
    third = await ask(relay, history)
    assert third == "Your name is Ada. You told me earlier in this conversation."
    for request in sim.requests[-2:]:
        assert request.body["input"].get("session_id") == session_id
        assert "messages" not in request.body["input"]
    assert sim.requests[-1].body["input"]["prompt"] == "what's my name?"


async def test_regenerate_and_edit_start_from_the_clients_history(
    relay: Relay, sim: BailianSimulator
) -> None:
    """Regenerating the last answer (the same history again) and editing an earlier
    message both send the client's history as input.messages, never the conversation
    that moved on; the answers follow the history the client shows."""
    first = await ask(relay, said(("user", "my name is Ada")))
    asked = said(("user", "my name is Ada"), ("assistant", first), ("user", "what's my name?"))
    assert "Ada" in await ask(relay, asked)
    assert "messages" not in sim.requests[-1].body["input"]

    again = await ask(relay, asked)  # regenerate
    assert "Ada" in again
    sent = sim.requests[-1].body["input"]
    assert sent["messages"] == said(("user", "my name is Ada"), ("assistant", first))
    assert sent["prompt"] == "what's my name?"

    edited = said(("user", "my name is Grace"), ("assistant", first), ("user", "what's my name?"))
    assert "Grace" in await ask(relay, edited)
    assert sim.requests[-1].body["input"]["messages"][0]["content"] == "my name is Grace"


async def test_a_seeded_conversation_keeps_its_context(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A first request that brings history, then its next turn: the app sees the whole
    history both times (the service keeps no context given as messages)."""
    history = said(
        ("system", "Be brief."),
        ("user", "my name is Lin"),
        ("assistant", "Hi Lin"),
        ("user", "hello"),
    )
    reply = await ask(relay, history)
    history += said(("assistant", reply), ("user", "what's my name?"))
    assert "Lin" in await ask(relay, history)
    assert sim.requests[-1].body["input"]["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }


async def test_another_user_cannot_continue_or_see_a_conversation(
    relay: Relay, sim: BailianSimulator
) -> None:
    """Bob sending Alice's exact history reaches none of Alice's conversation: his turn
    carries no session_id of hers, and what he gets comes from his own history only."""
    first = await ask(relay, said(("user", "my name is Ada")))
    alice_session = sim.requests[-1].session_id
    stolen = said(("user", "my name is Ada"), ("assistant", first), ("user", "hi"))
    await ask(relay, stolen, token=BOB)
    assert sim.requests[-1].body["input"].get("session_id") != alice_session
    assert "messages" in sim.requests[-1].body["input"]
    # And Alice's own conversation is still hers to continue.
    await ask(relay, stolen)
    assert sim.requests[-1].body["input"].get("session_id") == alice_session


async def test_faults_arrive_as_the_sdks_own_errors(relay: Relay, sim: BailianSimulator) -> None:
    """A throttled upstream is a RateLimitError, a wrong token an AuthenticationError,
    an unknown model a NotFoundError, a bad request a BadRequestError, and an upstream
    failing mid-stream an APIError raised by the stream."""
    sim.inject(Fault.http(429))
    with pytest.raises(openai.RateLimitError):
        await ask(relay, said(("user", "hi")))
    with pytest.raises(openai.AuthenticationError):
        await ask(relay, said(("user", "hi")), token="not-a-token-0123456789")
    async with client(relay) as api:
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model="gpt-4o", messages=said(("user", "hi")))
        with pytest.raises(openai.BadRequestError) as bad:
            await api.chat.completions.create(
                model=relay.app_ids[0], messages=said(("user", "hi"), ("assistant", "yes"))
            )
        assert bad.value.code == "InvalidParameter"
        sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
        stream = await api.chat.completions.create(
            model=relay.app_ids[0], messages=said(("user", "hello there")), stream=True
        )
        got: list[str] = []

        async def read() -> None:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIError) as failed:
            await read()
        assert "inappropriate" in failed.value.message
        assert "".join(got)  # what came before the failure was delivered
        sim.inject(Fault.http(500))
        with pytest.raises(openai.InternalServerError):
            await api.chat.completions.create(
                model=relay.app_ids[0], messages=said(("user", "hi")), stream=True
            )


async def test_models_lists_the_served_apps(sim: BailianSimulator) -> None:
    """GET /v1/models lists each served app id as a model; it needs a token."""
    async with Relay(sim, app_ids=[sim.app_id, "a" * 32]) as relay:
        async with client(relay) as api:
            page = await api.models.list()
            assert [m.id for m in page.data] == [sim.app_id, "a" * 32]
            assert (await api.models.retrieve(sim.app_id)).id == sim.app_id
        async with client(relay, "not-a-token-0123456789") as api:
            with pytest.raises(openai.AuthenticationError):
                await api.models.list()


async def test_reasoning_arrives_as_reasoning_content(sim: BailianSimulator) -> None:
    """A reasoning app's thinking comes before the text as delta.reasoning_content."""
    sim.reasoning = True
    async with Relay(sim) as relay, client(relay) as api:
        stream = await api.chat.completions.create(
            model=relay.app_ids[0], messages=said(("user", "hello there")), stream=True
        )
        deltas = [c.choices[0].delta async for c in stream if c.choices]
        whole = await api.chat.completions.create(
            model=relay.app_ids[0], messages=said(("user", "hello there"))
        )
    thinking = [d.reasoning_content for d in deltas if getattr(d, "reasoning_content", None)]
    assert thinking == ['The user said "hello there". Answer using the 0 earlier turns.']
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    first_thought = next(i for i, d in enumerate(deltas) if getattr(d, "reasoning_content", None))
    assert first_thought < first_text
    assert whole.choices[0].message.reasoning_content == thinking[0]


async def test_citations_stay_readable(sim: BailianSimulator) -> None:
    """A knowledge-base reply cites as plain [n] (no <ref> tags, even split across
    events) and lists the cited documents under the text."""
    sim.chunk_size = 1
    options = {"rag_options": {"pipeline_ids": ["kb1"]}}
    async with Relay(sim, turn_options=options) as relay, client(relay) as api:
        stream = await api.chat.completions.create(
            model=relay.app_ids[0], messages=said(("user", "what is tyqw?")), stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert "<ref>" not in text and "</ref>" not in text
        body, _, listed = text.partition("\n\nSources:\n")
        markers = {line.split(" ")[0] for line in listed.splitlines()}
        assert markers and all(marker in body for marker in markers)
        # The reply with its sources, sent back as the client got it, continues the chat.
        session_id = sim.requests[-1].session_id
        await api.chat.completions.create(
            model=relay.app_ids[0],
            messages=said(("user", "what is tyqw?"), ("assistant", text), ("user", "more")),
        )
    assert sim.requests[-1].body["input"]["session_id"] == session_id


async def test_errors_are_plain_json_in_openais_shape(relay: Relay) -> None:
    """A refused request is application/json with OpenAI's error object."""
    async with aiohttp.ClientSession() as http:
        answer = await post(
            http,
            f"{relay.root}/v1/chat/completions",
            {"model": relay.app_ids[0], "messages": []},
            {"Authorization": f"Bearer {ALICE}"},
        )
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/json"
    error = json.loads(answer.raw)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "InvalidParameter"
    assert answer.headers["x-request-id"]


async def test_a_page_on_an_allowed_origin_may_call_it(sim: BailianSimulator) -> None:
    """A browser's preflight from an allowed origin is answered with the headers the
    openai SDK sends; another origin is refused."""
    site = "https://chat.example"
    asked = "authorization,content-type,x-stainless-os,x-stainless-retry-count"
    async with Relay(sim, cors=[site]) as relay, aiohttp.ClientSession() as http:
        for path in ("/v1/chat/completions", "/v1/models", "/api/chat"):
            async with http.options(
                f"{relay.root}{path}",
                headers={"Origin": site, "Access-Control-Request-Headers": asked},
            ) as response:
                assert response.status == 204
                assert response.headers["Access-Control-Allow-Origin"] == site
                assert response.headers["Access-Control-Allow-Headers"] == asked
        async with http.options(
            f"{relay.root}/v1/chat/completions", headers={"Origin": "https://evil.example"}
        ) as response:
            assert response.status == 403
        answer = await post(
            http,
            f"{relay.root}/v1/chat/completions",
            {"model": relay.app_ids[0], "messages": said(("user", "hi"))},
            {"Authorization": f"Bearer {ALICE}", "Origin": site},
        )
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Origin"] == site


async def test_workers_on_one_redis_continue_each_others_conversations(
    sim: BailianSimulator, redis_url: str
) -> None:
    """Turn 1 on one relay, turn 2 on another sharing its Redis: the second finds the
    conversation the first recorded and continues its session."""
    async with Relay(sim, store=redis_url) as one, Relay(sim, store=redis_url) as two:
        first = await ask(one, said(("user", "my name is Ada")))
        session_id = sim.requests[-1].session_id
        history = said(
            ("user", "my name is Ada"), ("assistant", first), ("user", "what's my name?")
        )
        assert "Ada" in await ask(two, history)
    assert sim.requests[-1].body["input"]["session_id"] == session_id
    assert "messages" not in sim.requests[-1].body["input"]


async def test_the_store_keeps_the_chats_text_once(sim: BailianSimulator, tmp_path: Path) -> None:
    """With a folder store, the users' text is in the conversation's transcript and
    nowhere else: what the relay records to find a conversation holds none of it, and a
    continued conversation's resent history is not stored again."""
    folder = tmp_path / "relay-store"
    async with Relay(sim, store=folder) as relay:
        first = await ask(relay, said(("user", "my name is Zebulon")))
        await ask(
            relay, said(("user", "my name is Zebulon"), ("assistant", first), ("user", "hi"))
        )
    files = [p for p in folder.rglob("*") if p.is_file()]
    holding = [p for p in files if b"Zebulon" in p.read_bytes()]
    assert [p.name.endswith(".transcript.jsonl") for p in holding] == [True]
    assert holding[0].read_bytes().count(b"my name is Zebulon") == 1
    assert len(files) > len(holding)  # the records and the pointer: no text


async def test_a_conversation_idle_past_the_services_lifetime_is_seeded(
    relay: Relay, sim: BailianSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored conversation older than the service keeps one is not continued: the
    client's history goes as input.messages instead of a dead session_id."""
    first = await ask(relay, said(("user", "my name is Ada")))
    monkeypatch.setattr(tyqw.relay._dialect, "LIFETIME", 0.0)
    history = said(("user", "my name is Ada"), ("assistant", first), ("user", "what's my name?"))
    assert "Ada" in await ask(relay, history)
    assert sim.requests[-1].body["input"]["messages"][0]["content"] == "my name is Ada"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{not json", "JSON"),
        ({"model": "M", "messages": "hi"}, "messages"),
        ({"model": "M", "messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"model": "M", "messages": [{"role": ["user"], "content": "x"}]}, "role"),
        (
            {
                "model": "M",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "image_url",
        ),
        ({"model": "M", "messages": [{"role": "user", "content": "x" * 9000}]}, "limit"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n must"),
    ],
)
async def test_a_bad_request_is_a_400_that_says_what_is_wrong(
    relay: Relay, sim: BailianSimulator, payload: Any, words: str
) -> None:
    """Each malformed request is refused before anything reaches the app, with OpenAI's
    error object naming the problem."""
    if isinstance(payload, dict):
        payload = {**payload, "model": relay.app_ids[0]}
    before = len(sim.requests)
    async with aiohttp.ClientSession() as http:
        answer = await post(
            http,
            f"{relay.root}/v1/chat/completions",
            payload,
            {"Authorization": f"Bearer {ALICE}"},
        )
    assert answer.status == 400
    assert words in json.loads(answer.raw)["error"]["message"]
    assert len(sim.requests) == before


async def test_a_client_that_goes_away_closes_the_upstream_request(
    sim: BailianSimulator,
) -> None:
    """An OpenAI stream abandoned mid-reply ends the upstream request at once."""
    sim.delay = 5.0  # far longer than the bound: only a disconnect can end the request
    async with Relay(sim) as relay, aiohttp.ClientSession() as http:
        response = await http.post(
            f"{relay.root}/v1/chat/completions",
            json={"model": relay.app_ids[0], "messages": said(("user", "hi")), "stream": True},
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), BOUND)
        upstream = sim.requests[-1]
        response.close()
        await asyncio.wait_for(upstream.done.wait(), 1.0)
    assert upstream.disconnected


async def test_a_conversation_header_continues_without_the_history(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A client that names its conversation (X-Tyqw-Conversation, also in every answer)
    may send only the new message and still continue it; another user naming the same
    conversation gets one of their own."""
    async with client(relay) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model=relay.app_ids[0], messages=said(("user", "my name is Ada"))
        )
        key = raw.headers["X-Tyqw-Conversation"]
        session_id = sim.requests[-1].session_id
        answer = await api.chat.completions.create(
            model=relay.app_ids[0],
            messages=said(("user", "what's my name?")),
            extra_headers={"X-Tyqw-Conversation": key},
        )
    assert "Ada" in (answer.choices[0].message.content or "")
    assert sim.requests[-1].body["input"]["session_id"] == session_id
    async with client(relay, BOB) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model=relay.app_ids[0],
            messages=said(("user", "what's my name?")),
            extra_headers={"X-Tyqw-Conversation": key},
        )
    assert "Ada" not in (raw.parse().choices[0].message.content or "")
    assert sim.requests[-1].body["input"].get("session_id") != session_id
