"""The relay's generation endpoint (``create_app(models=...)``, ``tyqw serve --model``):
the service's own path and body, the client keeping the history, the key kept on the
server, the body checked (model allow-list, message caps, known parameters only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tyqw.testing import BailianSimulator, default_reply

from .helpers import missing
from .relay_helpers import (
    ALICE,
    BOUND,
    SSE_HEADERS,
    Relay,
    RelayThread,
    auth,
    post,
    run_node_script,
)

PATH = "/services/aigc/text-generation/generation"


def generation(*messages: tuple[str, str], model: str = "qwen-plus", **params: Any) -> Any:
    body: dict[str, Any] = {
        "model": model,
        "input": {"messages": [{"role": r, "content": c} for r, c in messages]},
    }
    if params:
        body["parameters"] = params
    return body


async def test_a_stream_is_relayed_with_the_server_key(sim: BailianSimulator) -> None:
    """The client's body goes on as it is, under the server's key, and comes back framed."""
    told = generation(
        ("user", "my name is Ada"),
        ("assistant", "Nice to meet you"),
        ("user", "what's my name?"),
        result_format="message",
        incremental_output=True,
    )
    async with Relay(sim, models=["qwen-plus"]) as relay, aiohttp.ClientSession() as http:
        answer = await post(http, relay.base_url + PATH, told, auth(**SSE_HEADERS))
    assert answer.status == 200
    chunks = [json.loads(e.data) for e in answer.events if e.event == "result"]
    text = "".join(c["output"]["choices"][0]["message"]["content"] for c in chunks)
    assert text == "Your name is Ada. You told me earlier in this conversation."
    upstream = sim.requests[-1]
    assert upstream.path == "/api/v1" + PATH
    assert upstream.headers["authorization"] == f"Bearer {sim.api_key}"
    assert ALICE not in json.dumps(upstream.headers)
    assert upstream.body == told


async def test_a_json_answer_without_sse(sim: BailianSimulator) -> None:
    """Without the SSE header: one JSON answer, the service's shape."""
    async with Relay(sim, models=["qwen-plus"]) as relay, aiohttp.ClientSession() as http:
        answer = await post(http, relay.base_url + PATH, generation(("user", "hello")), auth())
    assert answer.status == 200
    assert answer.json["output"]["text"] == default_reply("hello", [])


@pytest.mark.parametrize(
    ("payload", "token", "status", "words"),
    [
        (generation(("user", "hi"), model="qwen-max"), ALICE, 404, "does not serve that model"),
        (generation(("user", "hi"), plugins="x"), ALICE, 400, "parameters.plugins is not allowed"),
        (generation(*[("user", "hi")] * 4), ALICE, 400, "1 to 3 messages"),
        (generation(("user", "x" * 101)), ALICE, 400, "longer than 100 characters"),
        (generation(("user", "hi")), "wrong-token", 401, "No valid relay token"),
    ],
    ids=["model", "parameter", "messages", "size", "token"],
)
async def test_the_body_is_checked_before_the_key_is_spent(
    sim: BailianSimulator, payload: Any, token: str, status: int, words: str
) -> None:
    """A model not in the list, an unknown parameter, too many or too long messages, a
    bad token: refused by the relay, nothing sent upstream."""
    async with (
        Relay(sim, models=["qwen-plus"], max_messages=3, max_prompt=100) as relay,
        aiohttp.ClientSession() as http,
    ):
        answer = await post(http, relay.base_url + PATH, payload, auth(token))
    assert answer.status == status
    assert words in answer.json["message"]
    assert sim.requests == []


async def test_the_service_refusal_reaches_the_client(sim: BailianSimulator) -> None:
    """A body the service refuses: its error frame, in its words, on the stream."""
    bad = generation(("tool", "1"), result_format="message", incremental_output=True)
    async with Relay(sim, models=["qwen-plus"]) as relay, aiohttp.ClientSession() as http:
        answer = await post(http, relay.base_url + PATH, bad, auth(**SSE_HEADERS))
    (error,) = answer.events
    assert error.event == "error"
    assert 'role "tool" must be a response' in json.loads(error.data)["message"]


@pytest.fixture
def relay_thread() -> Iterator[RelayThread]:
    thread = RelayThread().start(models=["qwen-plus"])
    yield thread
    thread.stop()


def test_the_official_sdk_through_the_relay(relay_thread: RelayThread) -> None:
    """Generation.call with the relay's URL and a user token instead of the key."""
    try:
        import dashscope
    except ImportError:
        missing("the official SDK is a dev dependency: pip install -e '.[dev]'")
    assert relay_thread.relay is not None
    call: Any = dashscope.Generation.call  # the SDK's types are looser than its stubs
    try:
        chunks = list(
            call(
                model="qwen-plus",
                messages=[{"role": "user", "content": "hello"}],
                api_key=ALICE,
                base_address=relay_thread.relay.base_url,
                stream=True,
                incremental_output=True,
                result_format="message",
                request_timeout=BOUND,
            )
        )
    finally:
        dashscope.close_shared_sync_session()
    assert [c.status_code for c in chunks] == [200] * len(chunks)
    text = "".join(c.output.choices[0].message.content for c in chunks)
    assert text == default_reply("hello", [])


async def run_article(url: str, token: str, messages: list[dict[str, str]]) -> list[Any]:
    """The article's fetch-event-source code under node, against ``url``."""
    scenario = {"url": url, "token": token, "messages": messages, "model": "qwen-plus"}
    return await run_node_script("model_client.mjs", scenario, "@microsoft/fetch-event-source")


async def test_the_article_browser_code_against_the_simulator_and_the_relay(
    sim: BailianSimulator,
) -> None:
    """The same node code reads the simulator with the key and the relay with a token,
    changing only the URL: the same reply, built from the messages it sends."""
    messages = [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Nice to meet you"},
        {"role": "user", "content": "what's my name?"},
    ]
    direct = await run_article(sim.base_url + PATH, sim.api_key, messages)
    async with Relay(sim, models=["qwen-plus"]) as relay:
        relayed = await run_article(relay.base_url + PATH, ALICE, messages)
    for lines in (direct, relayed):
        assert lines[-1] == {"done": True}
        text = "".join(line["piece"] for line in lines[:-1])
        assert text == "Your name is Ada. You told me earlier in this conversation."
