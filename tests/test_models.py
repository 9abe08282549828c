"""``Session(model=...)``: the text-generation endpoint, against the simulator.

The request a model turn sends (endpoint, headers, body, typed parameters), what the
user reads back (text in both wire modes, reasoning apart from the answer, usage), and
the service's refusals as typed errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw import BadRequestError, ContextLengthError, Session, SyncSession, TokenUsage
from tyqw.testing import BailianSimulator, default_reply

from .test_sync import SimThread


@pytest.fixture
def sim_thread() -> Iterator[BailianSimulator]:
    """A simulator on its own thread, for a SyncSession."""
    server = SimThread()
    yield server.sim
    server.close()


def model_session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> Session:
    """A model Session bound to the simulator."""
    kwargs.setdefault("model", "qwen-plus")
    return Session(api_key=sim.api_key, base_url=sim.base_url, state_dir=state_dir, **kwargs)


async def test_a_model_turn_sends_the_generation_body(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """The endpoint, the SSE header and the body the service documents for models."""
    async with model_session(sim, state_dir, system="You are terse.") as session:
        reply = await session.send("hello", temperature=0.5, max_tokens=200, stop=["\n\n"])
    request = sim.requests[-1]
    assert request.path == "/api/v1/services/aigc/text-generation/generation"
    assert request.headers["x-dashscope-sse"] == "enable"
    assert request.body == {
        "model": "qwen-plus",
        "input": {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hello"},
            ]
        },
        "parameters": {
            "result_format": "message",
            "incremental_output": True,
            "temperature": 0.5,
            "max_tokens": 200,
            "stop": ["\n\n"],
        },
    }
    assert reply.text == default_reply("hello", [])
    assert reply.finish_reason == "stop" and reply.session_id is not None


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "cumulative"])
async def test_text_is_right_in_both_wire_modes(
    sim: BailianSimulator, state_dir: Path, incremental: bool
) -> None:
    """Pieces or snapshots, the deltas add up to the reply and text grows with them."""
    async with model_session(sim, state_dir) as session:
        messages = [m async for m in session.stream("hello", incremental_output=incremental)]
    assert sim.requests[-1].body["parameters"]["incremental_output"] is incremental
    assert "".join(m.delta for m in messages) == messages[-1].text == default_reply("hello", [])
    assert [m.finish_reason for m in messages][-2:] == [None, "stop"]


async def test_a_json_answer_when_not_streaming(sim: BailianSimulator, state_dir: Path) -> None:
    """stream=False asks for one JSON body, without incremental_output, and reads it."""
    async with model_session(sim, state_dir) as session:
        reply = await session.send("hello", stream=False)
    assert "x-dashscope-sse" not in sim.requests[-1].headers
    assert "incremental_output" not in sim.requests[-1].body["parameters"]
    assert reply.text == default_reply("hello", []) and reply.finish_reason == "stop"


async def test_thinking_streams_reasoning_apart_and_counts_it(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """enable_thinking: thoughts first, the answer untouched, reasoning tokens in usage."""
    events: list[str] = []
    async with model_session(sim, state_dir) as session:
        session.on("thought", lambda t: events.append(f"thought:{t.text}"))
        session.on("message", lambda m: events.append("message") if m.delta else None)
        reply = await session.send("hello", enable_thinking=True, thinking_budget=500)
        usage = session.usage["qwen-plus"]
    assert reply.text == default_reply("hello", [])
    assert reply.reasoning is not None and reply.reasoning not in reply.text
    first_message = events.index("message")
    assert "".join(e[8:] for e in events[:first_message]) == reply.reasoning
    assert all(e == "message" for e in events[first_message:])
    assert usage.reasoning_tokens == len(reply.reasoning) > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens == len(reply.reasoning) + len(reply.text)


async def test_usage_adds_up_over_turns(sim: BailianSimulator, state_dir: Path) -> None:
    """Each turn's last running usage is added to the session's, under the model name."""
    async with model_session(sim, state_dir) as session:
        first = await session.send("hello")
        second = await session.send("hello again")
        assert first.usage and second.usage
        assert session.usage == {
            "qwen-plus": TokenUsage(
                first.usage["input_tokens"] + second.usage["input_tokens"],
                first.usage["output_tokens"] + second.usage["output_tokens"],
            )
        }


def test_exactly_one_of_app_id_and_model(state_dir: Path) -> None:
    """Both, or neither, is a ValueError that names the two."""
    both: dict[str, Any] = {"app_id": "app", "model": "qwen-plus"}
    for kwargs in ({}, both):
        with pytest.raises(ValueError, match="exactly one of app_id"):
            Session(**kwargs, api_key="sk-x", state_dir=state_dir)
    with pytest.raises(TypeError, match="system= is for a model"):
        Session("app", system="hi", api_key="sk-x", state_dir=state_dir)
    with pytest.raises(ValueError, match="invalid model"):
        Session(model="qwen/plus", api_key="sk-x", state_dir=state_dir)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"max_tokens": "100"}, TypeError, "max_tokens must be an int"),
        ({"temperature": True}, TypeError, "temperature must be a finite number"),
        ({"stop": [1, "a"]}, TypeError, "stop must be"),
        ({"tool_choice": "required"}, TypeError, "tool_choice must be"),
        ({"rag_options": {}}, TypeError, "option of app turns"),
        ({"session_id": "x" * 32}, TypeError, "option of app turns"),
        ({"max_tokenz": 1}, TypeError, "unknown option 'max_tokenz'"),
    ],
    ids=["max_tokens", "temperature", "stop", "tool_choice", "app-option", "session_id", "typo"],
)
async def test_parameters_are_checked_before_anything_is_sent(
    sim: BailianSimulator,
    state_dir: Path,
    options: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    """A wrong type, an app's option or a typo fails at once, with nothing sent."""
    async with model_session(sim, state_dir) as session:
        with pytest.raises(error, match=words):
            await session.send("hello", **options)
    assert sim.requests == []


async def test_unknown_parameters_go_through_parameters(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """parameters={...} reaches the body as is, merged last."""
    async with model_session(sim, state_dir) as session:
        await session.send("hello", parameters={"n": 1, "vl_high_resolution_images": True})
    sent = sim.requests[-1].body["parameters"]
    assert sent["n"] == 1 and sent["vl_high_resolution_images"] is True


async def test_a_refusal_is_a_typed_error_with_the_service_words(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """json_object without the word json: BadRequestError, the service's message."""
    async with model_session(sim, state_dir) as session:
        with pytest.raises(BadRequestError, match="must contain the word 'json'"):
            await session.send("hello", response_format={"type": "json_object"})
        reply = await session.send("answer in json", response_format={"type": "json_object"})
    assert reply.finish_reason == "stop"


async def test_too_long_for_the_context_is_a_context_length_error(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """Input past the model's context: ContextLengthError, which says so."""
    sim.max_input_tokens = 50
    async with model_session(sim, state_dir) as session:
        with pytest.raises(ContextLengthError, match="too long for the model's context") as info:
            await session.send("x" * 60)
    assert isinstance(info.value, BadRequestError)
    assert "Range of input length should be [1, 50]" in str(info.value)


def test_sync_session_talks_to_a_model(sim_thread: BailianSimulator, state_dir: Path) -> None:
    """SyncSession(model=...) streams the same reply, reasoning included."""
    with SyncSession(
        model="qwq-plus",
        api_key=sim_thread.api_key,
        base_url=sim_thread.base_url,
        state_dir=state_dir,
    ) as session:
        pieces = [m.delta for m in session.stream("hello")]
        reply = session.send("hello")
    assert "".join(pieces) == reply.text == default_reply("hello", [])
    assert reply.reasoning  # qwq thinks, whatever enable_thinking says


# -- the simulator, spoken to directly ---------------------------------------------------


async def generate(sim: BailianSimulator, body: dict[str, Any], sse: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    if sse:
        headers["X-DashScope-SSE"] = "enable"
    async with aiohttp.ClientSession() as http:
        url = sim.base_url + "/services/aigc/text-generation/generation"
        async with http.post(url, json=body, headers=headers) as response:
            if sse:
                return response.status, await response.text()
            return response.status, await response.json(content_type=None)


async def test_the_simulator_answers_from_the_messages_it_is_sent(sim: BailianSimulator) -> None:
    """No server memory: the name told in an earlier message is in the answer."""
    told = [{"role": "user", "content": "my name is Ada"}]
    status, answer = await generate(sim, {"model": "qwen-plus", "input": {"messages": told}})
    assert status == 200
    said = answer["output"]["text"]  # result_format defaults to "text"
    asked = [
        *told,
        {"role": "assistant", "content": said},
        {"role": "user", "content": "what's my name?"},
    ]
    body = {"model": "qwen-plus", "input": {"messages": asked}}
    status, answer = await generate(sim, body)
    assert answer["output"]["text"].startswith("Your name is Ada.")
    status, answer = await generate(sim, {"model": "qwen-plus", "input": {"messages": asked[2:]}})
    assert answer["output"]["text"].startswith("You haven't told me your name")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "qwen-plus", "input": {"messages": []}}, "[] is too short"),
        (
            {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]},
            'Either "prompt" or "messages" must exist',
        ),
        (
            {"model": "qwen-plus", "input": {"messages": [{"role": "tool", "content": "1"}]}},
            'role "tool" must be a response',
        ),
        (
            {
                "model": "qwen-plus",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "parameters": {"enable_thinking": True, "incremental_output": True},
            },
            'result_format parameter must be "message"',
        ),
        (
            {
                "model": "qwen-plus",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "parameters": {"temperature": 2},
            },
            "Temperature should be in [0.0, 2.0)",
        ),
    ],
    ids=["empty", "messages-beside-model", "tool-first", "thinking-text", "temperature"],
)
async def test_the_simulator_refuses_in_the_service_words(
    sim: BailianSimulator, body: dict[str, Any], message: str
) -> None:
    """A bad body: HTTP 400 InvalidParameter; on a stream, HTTP 200 and an error frame."""
    status, answer = await generate(sim, body)
    assert (status, answer["code"]) == (400, "InvalidParameter")
    assert message in answer["message"]
    status, text = await generate(sim, body, sse=True)
    assert status == 200 and text.startswith("id:1\nevent:error\n:HTTP_STATUS/400\ndata:")
    assert message in json.loads(text.split("data:", 1)[1])["message"]


async def test_the_simulator_streams_in_the_captured_shape(sim: BailianSimulator) -> None:
    """ "null" until the end, running usage and one request id on every chunk."""
    body = {
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "parameters": {"result_format": "message", "incremental_output": True},
    }
    status, text = await generate(sim, body, sse=True)
    assert status == 200
    chunks = [json.loads(line[5:]) for line in text.split("\n") if line.startswith("data:")]
    finishes = [c["output"]["choices"][0]["finish_reason"] for c in chunks]
    assert finishes == ["null"] * (len(chunks) - 1) + ["stop"]
    outputs = [c["usage"]["output_tokens"] for c in chunks]
    assert outputs == sorted(outputs) and len({c["request_id"] for c in chunks}) == 1
    assert all(c["usage"]["total_tokens"] == 5 + c["usage"]["output_tokens"] for c in chunks)
