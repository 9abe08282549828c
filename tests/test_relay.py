"""The relay's endpoint: the service's wire answer, conversations, errors, disconnects.

Every test runs a real ``BailianSimulator`` upstream and the relay on 127.0.0.1, and
talks to the relay over real sockets with aiohttp (or with tyqw's own ``Session``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import tyqw
from tyqw import Session
from tyqw.relay import create_app
from tyqw.testing import BailianSimulator, Fault, default_reply

from .relay_helpers import (
    ALICE,
    BOB,
    BOUND,
    SSE_HEADERS,
    Relay,
    auth,
    body,
    events,
    post,
    text_of,
)

FRAME = re.compile(rb"id:(\d+)\nevent:(result|error)\n:HTTP_STATUS/(\d{3})\ndata:([^\n]+)\n\n")


async def test_sse_answer_is_framed_exactly_as_the_service_frames_it(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Each upstream event comes out as id/event/:HTTP_STATUS/data plus a blank line,
    ids counting from 1, the body nothing but such frames, the data the service's JSON."""
    answer = await post(
        http, relay.url(), body("hello there", incremental_output=True), auth(**SSE_HEADERS)
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/event-stream;charset=UTF-8"
    frames = FRAME.findall(answer.raw)
    assert (
        b"".join(b"id:%s\nevent:%s\n:HTTP_STATUS/%s\ndata:%s\n\n" % f for f in frames)
        == answer.raw
    )
    assert [int(f[0]) for f in frames] == list(range(1, len(frames) + 1))
    assert {(f[1], f[2]) for f in frames} == {(b"result", b"200")}
    payloads = [json.loads(f[3]) for f in frames]
    assert [p["output"]["finish_reason"] for p in payloads] == ["null"] * (len(payloads) - 1) + [
        "stop"
    ]
    assert "".join(p["output"]["text"] for p in payloads) == default_reply("hello there", [])
    upstream = sim.requests[-1]
    assert {p["request_id"] for p in payloads} == {upstream.request_id}
    assert answer.headers["x-request-id"] == upstream.request_id
    assert {p["output"]["session_id"] for p in payloads} == {upstream.session_id}


async def test_sse_answer_carries_headers_that_stop_proxies_buffering(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """The stream says no-cache, X-Accel-Buffering: no and is not compressed, even when
    the client accepts gzip."""
    answer = await post(
        http, relay.url(), body("hi"), auth(**SSE_HEADERS, **{"Accept-Encoding": "gzip, br"})
    )
    assert "no-cache" in answer.headers["Cache-Control"]
    assert answer.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in answer.headers


@pytest.mark.parametrize(
    ("headers", "streamed"),
    [
        pytest.param({"X-DashScope-SSE": "enable"}, True, id="x-dashscope-sse"),
        pytest.param(
            {"Accept": "text/event-stream"}, True, id="accept-only-like-fetch-event-source"
        ),
        pytest.param({"Accept": "application/json"}, False, id="neither-json"),
        pytest.param({}, False, id="no-headers-json"),
    ],
)
async def test_sse_for_either_header_and_json_for_neither(
    relay: Relay,
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    streamed: bool,
) -> None:
    """X-DashScope-SSE: enable or Accept: text/event-stream gets a stream; neither gets
    the service's one JSON answer, asked of the service without SSE."""
    answer = await post(http, relay.url(), body("hello there"), auth(**headers))
    assert answer.status == 200
    upstream = sim.requests[-1]
    assert upstream.sse is streamed
    if streamed:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        assert json.loads(answer.events[-1].data)["output"]["text"] == default_reply(
            "hello there", []
        )
    else:
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json["output"]["text"] == default_reply("hello there", [])
        assert answer.json["output"]["finish_reason"] == "stop"
        assert answer.json["request_id"] == upstream.request_id == answer.headers["x-request-id"]


@pytest.mark.parametrize(
    ("parameters", "cumulative"),
    [
        pytest.param({}, True, id="absent-service-default-cumulative"),
        pytest.param({"incremental_output": False}, True, id="false"),
        pytest.param({"incremental_output": True}, False, id="true"),
    ],
)
async def test_text_mode_is_what_the_client_asked_the_service_for(
    relay: Relay,
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    parameters: dict[str, Any],
    cumulative: bool,
) -> None:
    """Without incremental_output the client gets cumulative text, the service's default;
    with it, increments: the relay passes the choice on instead of imposing tyqw's."""
    answer = await post(http, relay.url(), body("hello there", **parameters), auth(**SSE_HEADERS))
    texts = [json.loads(e.data)["output"]["text"] for e in answer.events]
    full = default_reply("hello there", [])
    assert sim.requests[-1].body["parameters"]["incremental_output"] is not cumulative
    if cumulative:
        assert texts[-1] == full and all(full.startswith(t) for t in texts)
    else:
        assert "".join(texts) == full and texts[-1] == ""


async def test_a_second_turn_with_the_session_id_continues_the_conversation(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The session_id a turn returned continues it; a turn without one starts anew, as
    clearSessionId() did in the original class."""
    first = await post(http, relay.url(), body("my name is Ada"), auth())
    session_id = first.json["output"]["session_id"]
    second = await post(http, relay.url(), body("what's my name?", session_id), auth())
    assert second.json["output"]["session_id"] == session_id
    assert "Ada" in second.json["output"]["text"]
    fresh = await post(http, relay.url(), body("what's my name?"), auth())
    assert fresh.json["output"]["session_id"] != session_id
    assert "Ada" not in fresh.json["output"]["text"]
    assert [r.body["input"].get("session_id") for r in sim.requests] == [None, session_id, None]


async def test_an_old_session_id_is_refused_once_a_new_conversation_started(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Only the user's current conversation can be continued: an earlier id is refused
    in-band on a stream (HTTP 200, event:error, :HTTP_STATUS/400) and nothing is sent."""
    old = (await post(http, relay.url(), body("hi"), auth())).json["output"]["session_id"]
    await post(http, relay.url(), body("hi again"), auth())
    sent = len(sim.requests)
    answer = await post(http, relay.url(), body("hi", old), auth(**SSE_HEADERS))
    assert answer.status == 200
    [error] = answer.events
    assert (error.event, error.comment) == ("error", "HTTP_STATUS/400")
    assert json.loads(error.data)["code"] == "InvalidParameter"
    assert "session_id" in json.loads(error.data)["message"]
    assert answer.raw.endswith(b"\n\n")
    assert len(sim.requests) == sent


async def test_each_user_has_a_conversation_of_their_own(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """Alice's and Bob's turns never share a conversation, whatever they send."""
    alice = await post(http, relay.url(), body("my name is Alice"), auth(ALICE))
    bob = await post(http, relay.url(), body("my name is Bob"), auth(BOB))
    assert alice.json["output"]["session_id"] != bob.json["output"]["session_id"]
    alice_id = alice.json["output"]["session_id"]
    again = await post(http, relay.url(), body("what's my name?", alice_id), auth(ALICE))
    assert "Alice" in again.json["output"]["text"]


async def test_an_error_inside_the_upstream_stream_is_passed_on_in_band(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Events before an upstream event:error arrive, then the error frame with the
    service's status, code, message and request id."""
    sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
    answer = await post(
        http, relay.url(), body("hello there", incremental_output=True), auth(**SSE_HEADERS)
    )
    sse = answer.events
    assert [(e.event, e.id) for e in sse] == [("result", "1"), ("result", "2"), ("error", "3")]
    assert sse[-1].comment == "HTTP_STATUS/400"
    error = json.loads(sse[-1].data)
    assert error["code"] == "DataInspectionFailed"
    assert error["request_id"] == sim.requests[-1].request_id
    assert set(error) == {"code", "message", "request_id"}
    assert text_of(sse) == default_reply("hello there", [])[: 2 * sim.chunk_size]


async def test_an_upstream_http_error_is_a_json_error_for_a_json_request(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A non-streaming request the service refuses gets the service's status and body."""
    sim.inject(
        Fault.http(
            400, "Arrearage", "Access denied, please make sure your account is in good standing."
        )
    )
    answer = await post(http, relay.url(), body("hi"), auth())
    assert answer.status == 400
    assert answer.json == {
        "code": "Arrearage",
        "message": "Access denied, please make sure your account is in good standing.",
        "request_id": sim.requests[-1].request_id,
    }


async def test_an_unreachable_upstream_is_a_502_that_names_no_internal_host(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """With the service unreachable the client gets ServiceUnavailable (502) in-band, and
    nothing about where the relay tried to connect."""
    async with Relay(sim, session_options={"max_retries": 0}) as relay:
        await sim.aclose()
        answer = await post(http, relay.url(), body("hi"), auth(**SSE_HEADERS))
    [error] = answer.events
    assert error.comment == "HTTP_STATUS/502"
    assert json.loads(error.data)["code"] == "ServiceUnavailable"
    assert str(sim.port) not in answer.raw.decode()


async def test_tyqw_session_works_pointed_at_the_relay(relay: Relay, state_dir: Path) -> None:
    """tyqw's own Session, given the relay's URL and a relay token, holds a multi-turn
    conversation through it, and a wrong token is an AuthenticationError."""
    async with Session(
        relay.app_ids[0], api_key=ALICE, base_url=relay.base_url, state_dir=state_dir
    ) as session:
        await session.send("my name is Ada")
        reply = await session.send("what's my name?")
    assert "Ada" in reply.text and reply.error is None
    async with Session(
        relay.app_ids[0],
        api_key="wrong-token-0123456789",
        base_url=relay.base_url,
        state_dir=state_dir,
        name="x",
    ) as stranger:
        with pytest.raises(tyqw.AuthenticationError):
            await stranger.send("hi")


async def test_a_session_at_the_relay_keeps_its_conversation_past_the_service_limit(
    sim: BailianSimulator, relay: Relay, state_dir: Path
) -> None:
    """Once a Session judges that the service forgot its conversation (here after 2
    rounds), it resends the recent exchanges as input.messages: the relay takes them to
    the app, and the conversation goes on remembering."""
    async with Session(
        relay.app_ids[0],
        api_key=ALICE,
        base_url=relay.base_url,
        state_dir=state_dir,
        expiry=tyqw.Expiry(rounds=2),
    ) as session:
        await session.send("my name is Ada")
        await session.send("I live in Hangzhou")
        reply = await session.send("what's my name?")  # the third round: resent
    assert reply.error is None and "Ada" in reply.text
    resent = sim.requests[-1].body["input"]["messages"]
    assert [m["content"] for m in resent if m["role"] == "user"][:2] == [
        "my name is Ada",
        "I live in Hangzhou",
    ]


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "input.messages must be a list of 1 to 100 messages"),
        ([{"role": "user", "content": "x"}] * 101, "input.messages must be a list of 1 to 100"),
        ([{"role": "tool", "content": "x"}], "input.messages[0] must be {'role'"),
        ([{"role": "user", "content": 1}], "input.messages[0] must be {'role'"),
        ([{"role": "user", "content": "x", "name": "n"}], "input.messages[0] must be {'role'"),
        ([{"role": "user", "content": "x" * 8_001}], "input.messages[0].content is longer"),
    ],
)
async def test_context_messages_the_relay_refuses_are_named(
    relay: Relay, http: aiohttp.ClientSession, messages: list[Any], says: str
) -> None:
    """input.messages out of shape or over the caps is a 400 naming what is wrong."""
    request = {"input": {"prompt": "hi", "messages": messages}, "parameters": {}}
    answer = await post(http, relay.url(), request, auth())
    assert answer.status == 400 and answer.json["message"].startswith(says)


async def test_mounted_under_a_prefix_in_an_existing_app(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """create_app() mounted with add_subapp('/tyqw', ...) answers at /tyqw/api/v1/... and
    /tyqw/, the way the original class posted to its own site, beside the app's routes."""
    async with Relay(sim, mount="/tyqw") as relay:
        assert relay.url().endswith(f"/tyqw/api/v1/apps/{sim.app_id}/completion")
        answer = await post(http, relay.url(), body("hello there"), auth())
        assert answer.json["output"]["text"] == default_reply("hello there", [])
        async with http.get(f"{relay.root}/") as page:
            assert page.status == 200 and "<title>tyqw chat</title>" in await page.text()
        async with http.get(f"{relay.root}/relay.json") as settings:
            assert (await settings.json())["app_ids"] == [sim.app_id]


async def test_the_page_is_served_with_a_policy_that_allows_only_its_own_code(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """GET / is the chat page; its CSP allows exactly its inline script and style (by
    hash), connections to this origin only, nothing from elsewhere."""
    async with http.get(f"{relay.root}/") as response:
        html = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    for kind in ("script", "style"):
        [block] = re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy.replace("'self'", "")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), (
        "the page loads nothing from elsewhere"
    )


def test_the_relay_module_exports_a_documented_api() -> None:
    """tyqw.relay.__all__ is exactly its public names; create_app and load_tokens have
    docstrings with an example."""
    import inspect

    import tyqw.relay

    public = {
        name
        for name, value in vars(tyqw.relay).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert (
        set(tyqw.relay.__all__)
        == public
        == {
            "ANONYMOUS",
            "Authenticate",
            "create_app",
            "load_tokens",
        }
    )
    for function in (tyqw.relay.create_app, tyqw.relay.load_tokens):
        assert "Example" in (inspect.getdoc(function) or ""), function


async def test_settings_tell_the_page_the_apps_and_that_a_token_is_needed(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    """relay.json lists the served app ids, how the relay knows its users, and that its
    upstream is the offline simulator (the relay was given the simulator's key)."""
    async with http.get(f"{relay.root}/relay.json") as response:
        assert await response.json() == {
            "app_ids": relay.app_ids,
            "auth": "token",
            "max_prompt": 8000,
            "offline": True,
        }


async def test_the_first_event_reaches_the_client_while_upstream_is_still_sending(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """No buffering: the client reads the first event while the upstream reply is still
    in progress (the simulator has not finished the request)."""
    sim.delay = 5.0  # the second event leaves upstream only seconds after the first
    async with (
        Relay(sim) as relay,
        http.post(
            relay.url(), json=body("hello there, tell me more"), headers=auth(**SSE_HEADERS)
        ) as response,
    ):
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), BOUND)
        assert first.startswith(b"id:1\nevent:result\n")
        assert not sim.requests[-1].done.is_set()
        response.close()
        await asyncio.wait_for(sim.requests[-1].done.wait(), BOUND)


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["mounted-default", "serve"])
async def test_a_client_that_goes_away_mid_reply_closes_the_upstream_request_within_1s(
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    handler_cancellation: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client disconnects while the upstream is between events: the relay closes the
    upstream request at once (under 1 s), with or without aiohttp's handler cancellation,
    and logs no error for it (a closed tab is not a server fault)."""
    sim.delay = 5.0  # far longer than the bound: only a disconnect can end the request
    async with Relay(sim, handler_cancellation=handler_cancellation) as relay:
        response = await http.post(
            relay.url(), json=body("hello there"), headers=auth(**SSE_HEADERS)
        )
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), BOUND)
        upstream = sim.requests[-1]
        response.close()
        await asyncio.wait_for(upstream.done.wait(), 1.0)
        assert upstream.disconnected
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_client_that_goes_away_before_any_event_closes_the_upstream_request(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Gone while the service has sent nothing yet: the upstream request is closed too."""
    arrived = asyncio.Event()

    def reply(prompt: str, history: list[tuple[str, str]]) -> str:
        arrived.set()  # the relay's request has reached the simulator
        return "never sent"

    sim.reply = reply
    sim.inject(Fault.stall(30))  # headers, then silence
    async with Relay(sim) as relay:
        task = asyncio.ensure_future(
            http.post(relay.url(), json=body("hi"), headers=auth(**SSE_HEADERS))
        )
        await asyncio.wait_for(arrived.wait(), BOUND)
        task.cancel()
        await asyncio.wait_for(sim.requests[-1].done.wait(), 1.0)
    assert sim.requests[-1].disconnected


async def test_the_next_turn_works_after_a_client_went_away(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """After a disconnect the user's Session is free: the next turn continues normally."""
    sim.delay = 5.0
    async with Relay(sim) as relay:
        response = await http.post(
            relay.url(), json=body("my name is Ada"), headers=auth(**SSE_HEADERS)
        )
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), BOUND)
        session_id = json.loads(events(first)[0].data)["output"]["session_id"]
        response.close()
        await asyncio.wait_for(sim.requests[-1].done.wait(), 1.0)
        sim.delay = 0.0
        answer = await post(http, relay.url(), body("hello", session_id), auth())
    assert answer.status == 200
    assert answer.json["output"]["session_id"] == session_id


async def test_mounted_relay_app_keeps_the_parent_routes(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Mounting adds the relay's routes and touches none of the parent's."""
    parent = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    parent.router.add_get("/health", health)
    relay = Relay(sim)
    parent.add_subapp("/tyqw", relay.relay_app)
    runner = web.AppRunner(parent)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    root = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with http.get(f"{root}/health") as response:
            assert await response.text() == "ok"
        answer = await post(
            http, f"{root}/tyqw/api/v1/apps/{sim.app_id}/completion", body("hi"), auth()
        )
        assert answer.status == 200
    finally:
        await runner.cleanup()


async def test_a_user_whose_session_was_dropped_continues_the_conversation(
    sim: BailianSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap of Sessions kept in memory the idle ones are dropped; the store still
    holds their conversation, so such a user's next turn continues it."""
    import tyqw.relay._users as users

    monkeypatch.setattr(users, "MAX_SESSIONS", 1)
    async with Relay(sim) as relay:
        alice = await post(http, relay.url(), body("my name is Alice"), auth(ALICE))
        await post(http, relay.url(), body("my name is Bob"), auth(BOB))  # drops Alice's
        alice_id = alice.json["output"]["session_id"]
        again = await post(http, relay.url(), body("what's my name?", alice_id), auth(ALICE))
    assert again.status == 200
    assert "Alice" in again.json["output"]["text"]


def test_a_relay_without_an_upstream_key_fails_when_built() -> None:
    """No api_key and no DASHSCOPE_API_KEY: create_app() raises MissingAPIKeyError at
    once, naming the variable, instead of failing every turn later."""
    with pytest.raises(tyqw.MissingAPIKeyError, match="DASHSCOPE_API_KEY"):
        create_app(["app"], allow_anonymous=True)
