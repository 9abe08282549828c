"""Real clients against the relay: the original class's fetch-event-source under node,
and the official ``dashscope`` SDK (``Application.call`` and the 2.x ``AsyncClient``).

The relay and the simulator run in the test's event loop; node runs as a child process
and the SDK's blocking calls in a thread, so the loop keeps serving them.
"""

from __future__ import annotations

import asyncio
import warnings
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp import web

from tyqw.testing import BailianSimulator, Fault, default_reply

from .helpers import missing
from .relay_helpers import ALICE, TOKENS, Relay, run_node_script

# -- @microsoft/fetch-event-source, used as the original TypeScript class used it --------


async def run_node(
    relay: Relay, steps: list[dict[str, Any]], token: str = ALICE
) -> list[dict[str, Any]]:
    scenario = {"base": relay.root, "app_id": relay.app_ids[0], "token": token, "steps": steps}
    return await run_node_script("tyqw_client.mjs", scenario, "@microsoft/fetch-event-source")


def step(lines: list[dict[str, Any]], n: int, kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["step"] == n and line["type"] == kind]


async def test_fetch_event_source_multi_turn_round_trips_the_session_id(
    sim: BailianSimulator,
) -> None:
    """The original client streams each reply through onmessage, keeps the session_id of
    the first turn and sends it with the second, which remembers the first; it sends
    only Accept: text/event-stream, never X-DashScope-SSE."""
    seen: list[dict[str, str]] = []

    def authenticate(request: web.Request) -> str | None:
        seen.append(dict(request.headers))
        return TOKENS.get(request.headers.get("Authorization", "").removeprefix("Bearer "))

    async with Relay(sim, authenticate=authenticate) as relay:
        lines = await run_node(relay, [{"send": "my name is Ada"}, {"send": "what's my name?"}])
    first, second = step(lines, 0, "message"), step(lines, 1, "message")
    assert len(first) > 2 and [m["id"] for m in first] == [
        str(i) for i in range(1, len(first) + 1)
    ]
    assert "".join(m["text"] for m in first) == default_reply("my name is Ada", [])
    assert "Ada" in "".join(m["text"] for m in second)
    [done0], [done1] = step(lines, 0, "done"), step(lines, 1, "done")
    session_id = first[0]["session_id"]
    assert done0["sent_session_id"] is None and done1["sent_session_id"] == session_id
    assert {m["session_id"] for m in first + second} == {session_id}
    assert (
        not done0["failed"]
        and not done1["failed"]
        and not [x for x in lines if x["type"] == "error"]
    )
    assert [r.body["input"].get("session_id") for r in sim.requests] == [None, session_id]
    assert all(h.get("Accept") == "text/event-stream" and "X-DashScope-SSE" not in h for h in seen)


async def test_fetch_event_source_clear_session_id_starts_a_new_conversation(
    relay: Relay, sim: BailianSimulator
) -> None:
    """clearSessionId() then send: no session_id goes out, a new conversation answers
    (the name told before is forgotten), and the client keeps the new id."""
    lines = await run_node(
        relay, [{"send": "my name is Ada"}, {"clear": True}, {"send": "what's my name?"}]
    )
    old = step(lines, 0, "done")[0]["session_id"]
    [done] = step(lines, 2, "done")
    assert done["sent_session_id"] is None
    assert done["session_id"] not in (None, old)
    assert "Ada" not in "".join(m["text"] for m in step(lines, 2, "message"))
    assert sim.requests[-1].body["input"].get("session_id") is None


async def test_fetch_event_source_in_band_error_reaches_onmessage_then_onerror(
    relay: Relay, sim: BailianSimulator
) -> None:
    """An upstream error mid-reply arrives after the events before it, as an error event
    in onmessage; the class rethrows it into onerror with the service's code and request
    id, and the turn is not retried."""
    sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
    lines = await run_node(relay, [{"send": "hello there"}])
    assert len(step(lines, 0, "message")) == 2
    [error] = step(lines, 0, "error")
    assert error["where"] == "onmessage"
    assert error["code"] == "DataInspectionFailed"
    assert error["request_id"] == sim.requests[-1].request_id
    assert step(lines, 0, "done")[0]["failed"]
    assert len(sim.requests) == 1


async def test_fetch_event_source_refused_request_reaches_onerror_without_retry(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A wrong token is an HTTP 401 that onopen turns into onerror, once: no retry loop."""
    lines = await run_node(relay, [{"send": "hi"}], token="wrong-token-0123456789")
    [error] = step(lines, 0, "error")
    assert (error["where"], error["status"], error["code"]) == ("onopen", 401, "InvalidApiKey")
    assert sim.requests == []


async def test_fetch_event_source_refused_session_id_is_an_in_band_error(
    relay: Relay, sim: BailianSimulator
) -> None:
    """setSessionId() with an id that is not the user's conversation: the relay refuses
    it in-band, and the class sees InvalidParameter in onmessage."""
    lines = await run_node(relay, [{"set": "f" * 32}, {"send": "hi"}])
    [error] = step(lines, 1, "error")
    assert (error["where"], error["code"]) == ("onmessage", "InvalidParameter")
    assert sim.requests == []


# -- the official dashscope SDK -------------------------------------------------------------


def dashscope_sdk() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own import-time deprecations, not ours
            import dashscope
    except ImportError:
        missing("no dashscope SDK: pip install -e '.[dev]'")
    return dashscope


async def test_dashscope_application_call_streams_through_the_relay(
    relay: Relay, sim: BailianSimulator
) -> None:
    """Application.call(stream=True, incremental_output=True) against the relay: every
    chunk is 200 with the next piece; together they are the app's reply."""
    dashscope = dashscope_sdk()

    def call() -> list[Any]:
        return list(
            dashscope.Application.call(
                app_id=relay.app_ids[0],
                prompt="hello there",
                api_key=ALICE,
                stream=True,
                incremental_output=True,
                base_address=relay.base_url,
            )
        )

    chunks = await asyncio.to_thread(call)
    assert {c.status_code for c in chunks} == {HTTPStatus.OK}
    assert "".join(c.output.text for c in chunks) == default_reply("hello there", [])
    assert chunks[-1].output.finish_reason == "stop"
    assert chunks[0].request_id == sim.requests[-1].request_id


async def test_dashscope_application_call_multi_turn_and_non_stream(
    relay: Relay, sim: BailianSimulator
) -> None:
    """Non-streaming calls get one answer; passing output.session_id back continues the
    conversation, as the SDK's own multi-turn example does."""
    dashscope = dashscope_sdk()

    def call(prompt: str, session_id: str | None = None) -> Any:
        return dashscope.Application.call(
            app_id=relay.app_ids[0],
            prompt=prompt,
            api_key=ALICE,
            session_id=session_id,
            base_address=relay.base_url,
        )

    first = await asyncio.to_thread(call, "my name is Ada")
    second = await asyncio.to_thread(call, "what's my name?", first.output.session_id)
    assert first.status_code == second.status_code == HTTPStatus.OK
    assert second.output.session_id == first.output.session_id
    assert "Ada" in second.output.text
    assert not sim.requests[-1].sse


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        pytest.param("wrong-token", 401, "InvalidApiKey", id="401"),
        pytest.param("other-app", 404, "NotFound", id="404"),
        pytest.param("moderation", 400, "DataInspectionFailed", id="upstream-400"),
        pytest.param("throttled", 429, "Throttling", id="429"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["call", "stream"])
async def test_dashscope_application_call_sees_the_error_codes(
    sim: BailianSimulator, case: str, status: int, code: str, stream: bool
) -> None:
    """The SDK reports each refusal with the status and DashScope code the relay gave:
    a bad token, an app not served, an upstream error, the rate limit."""
    dashscope = dashscope_sdk()
    async with Relay(sim, rate=1) as relay:
        token, app_id = ALICE, relay.app_ids[0]
        if case == "wrong-token":
            token = "wrong-token-0123456789"
        elif case == "other-app":
            app_id = "0123456789abcdef0123456789abcdef"
        elif case == "moderation":
            sim.inject(Fault.stream_error(after=0, status=400, code="DataInspectionFailed"))
        else:
            await asyncio.to_thread(
                dashscope.Application.call,
                app_id=app_id,
                prompt="hi",
                api_key=token,
                base_address=relay.base_url,
            )

        def call() -> Any:
            answer = dashscope.Application.call(
                app_id=app_id,
                prompt="hi",
                api_key=token,
                stream=stream,
                base_address=relay.base_url,
            )
            return list(answer)[-1] if stream else answer

        answer = await asyncio.to_thread(call)
    assert (answer.status_code, answer.code) == (status, code)
    assert answer.request_id


async def test_dashscope_async_client_streams_and_raises_typed_errors(
    relay: Relay, sim: BailianSimulator
) -> None:
    """The 2.x AsyncClient (which sends only X-DashScope-SSE) streams a reply through the
    relay and raises its typed error for an in-band upstream error."""
    dashscope = dashscope_sdk()
    async with dashscope.AsyncClient(api_key=ALICE, base_url=relay.base_url) as client:
        stream = await client.apps.completions.create(
            app_id=relay.app_ids[0], prompt="hello there", stream=True, incremental_output=True
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.text for c in chunks) == default_reply("hello there", [])
        sim.inject(Fault.stream_error(after=1, status=400, code="DataInspectionFailed"))
        stream = await client.apps.completions.create(
            app_id=relay.app_ids[0], prompt="hi", stream=True, session_id=chunks[0].session_id
        )
        with pytest.raises(dashscope.v2.errors.ContentFilterError) as raised:
            async for _ in stream:
                pass
    assert raised.value.code == "DataInspectionFailed"
