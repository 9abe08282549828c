"""The relay's OpenAI dialect for Qwen models and aliases, read by the official ``openai``
SDK: a served model answers /v1/chat/completions from the client's own messages, its
tool calls reach the client in OpenAI's shape and the client's tool results go back,
and an operator's alias names an app or a model.

The relay and the simulator run in the test's event loop on 127.0.0.1; every check is
on what a user of the SDK sees, and on what reached the simulator (``sim.requests``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tyqw.relay import create_app
from tyqw.stores import MemoryStore
from tyqw.testing import BailianSimulator, Fault

from .relay_helpers import ALICE, BOUND, Relay

ROOT = Path(__file__).resolve().parent.parent

GENERATION = "/api/v1/services/aigc/text-generation/generation"
ADA = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "my name is Ada"},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "what's my name?"},
]
REMEMBERED = "Your name is Ada. You told me earlier in this conversation."
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "The weather in a city, now.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
async def relay(sim: BailianSimulator) -> AsyncIterator[Relay]:
    async with Relay(sim, models=["qwen-plus"], session_options={"max_retries": 0}) as running:
        yield running


def client(relay: Relay) -> Any:
    return openai.AsyncOpenAI(
        base_url=f"{relay.root}/v1", api_key=ALICE, max_retries=0, timeout=BOUND
    )


async def test_a_model_streams_from_the_clients_own_messages(
    relay: Relay, sim: BailianSimulator
) -> None:
    """openai-python streams a model's turn: the client's messages (system included) are
    what the model is sent, the role comes first, then the text, a stop finish and usage."""
    async with client(relay) as api:
        stream = await api.chat.completions.create(
            model="qwen-plus",
            messages=ADA,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.5,
        )
        chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == REMEMBERED
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.model == "qwen-plus" for c in chunks)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == len(REMEMBERED)
    assert usage.prompt_tokens == sum(len(m["content"]) for m in ADA)
    sent = sim.requests[-1]
    assert sent.path == GENERATION and sent.body["model"] == "qwen-plus"
    assert sent.body["input"]["messages"] == ADA
    assert sent.body["parameters"]["temperature"] == 0.5


async def test_a_whole_model_answer_with_reasoning(relay: Relay) -> None:
    """Without stream: message.content, the thinking as message.reasoning_content, and
    its tokens in usage.completion_tokens_details."""
    async with client(relay) as api:
        answer = await api.chat.completions.create(
            model="qwen-plus", messages=ADA, extra_body={"enable_thinking": True}
        )
        streamed = await api.chat.completions.create(
            model="qwen-plus", messages=ADA, stream=True, extra_body={"enable_thinking": True}
        )
        deltas = [c.choices[0].delta async for c in streamed if c.choices]
    said = answer.choices[0].message
    assert said.content == REMEMBERED and answer.choices[0].finish_reason == "stop"
    thinking = getattr(said, "reasoning_content", None)
    assert thinking
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == thinking
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == len(thinking)


async def test_a_tool_round_through_openai_python(relay: Relay, sim: BailianSimulator) -> None:
    """The client's tools reach the model; its two calls stream as delta.tool_calls (id
    and name first, one call per chunk) ending "tool_calls"; the client runs them and its
    tool messages go back with their ids; the model answers from the results."""
    asked = [{"role": "user", "content": "What's the weather in Hangzhou and Shanghai?"}]
    async with client(relay) as api:
        stream = await api.chat.completions.create(
            model="qwen-plus",
            messages=asked,
            tools=[WEATHER],
            parallel_tool_calls=True,
            stream=True,
        )
        chunks = [c async for c in stream]
        assert sim.requests[-1].body["parameters"]["tools"] == [WEATHER]
        calls: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                assert len(chunk.choices[0].delta.tool_calls or []) == 1
                if piece.index not in calls:
                    assert piece.id and piece.function and piece.function.name
                    calls[piece.index] = {"id": piece.id, "name": piece.function.name, "args": ""}
                else:
                    assert piece.id is None
                assert piece.function is not None
                calls[piece.index]["args"] += piece.function.arguments or ""
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert [json.loads(c["args"]) for c in calls.values()] == [
            {"location": "Hangzhou"},
            {"location": "Shanghai"},
        ]
        assert {c["name"] for c in calls.values()} == {"get_current_weather"}
        # The client runs the tools and sends the results back.
        followed: list[Any] = [
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["args"]},
                    }
                    for c in calls.values()
                ],
            },
            *(
                {"role": "tool", "tool_call_id": c["id"], "content": f"{i}: sunny"}
                for i, c in enumerate(calls.values())
            ),
        ]
        answer = await api.chat.completions.create(
            model="qwen-plus", messages=followed, tools=[WEATHER]
        )
    assert answer.choices[0].message.content == "The tools returned: 0: sunny; 1: sunny"
    assert answer.choices[0].finish_reason == "stop"
    sent = sim.requests[-1].body["input"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == [c["id"] for c in calls.values()]
    assert [m["tool_call_id"] for m in sent[2:]] == [c["id"] for c in calls.values()]


async def test_a_whole_answer_carries_the_models_tool_calls(relay: Relay) -> None:
    """Without stream, the calls are message.tool_calls and the finish is "tool_calls"."""
    async with client(relay) as api:
        answer = await api.chat.completions.create(
            model="qwen-plus",
            messages=[{"role": "user", "content": "What's the weather in Paris?"}],
            tools=[WEATHER],
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls: list[Any] = list(choice.message.tool_calls or [])
    [call] = calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


async def test_a_model_chat_leaves_nothing_in_the_relays_store(sim: BailianSimulator) -> None:
    """The relay keeps no transcript or pointer of a model chat: the client's messages
    are the whole history, so nothing of the users' text is stored."""
    store = MemoryStore()
    async with Relay(sim, models=["qwen-plus"], store=store) as relay, client(relay) as api:
        answer = await api.chat.completions.create(model="qwen-plus", messages=ADA)
    assert answer.choices[0].message.content == REMEMBERED
    assert [found async for found in store.conversations()] == []


async def test_a_bad_model_request_is_the_sdks_own_error(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A tool message without its call id, tool_choice "required" (which a Qwen model has
    no way to honour), the service failing and a stream failing midway arrive as openai's
    typed errors; nothing malformed reaches the service."""
    before = len(sim.requests)
    no_call_id: list[Any] = [*ADA, {"role": "tool", "content": "sunny"}]
    async with client(relay) as api:
        with pytest.raises(openai.BadRequestError, match="tool_call_id"):
            await api.chat.completions.create(
                model="qwen-plus",
                messages=no_call_id,
            )
        with pytest.raises(openai.BadRequestError, match="required"):
            await api.chat.completions.create(
                model="qwen-plus", messages=ADA, tools=[WEATHER], tool_choice="required"
            )
        too_long: list[Any] = [{"role": "user", "content": "x" * 9000}]
        with pytest.raises(openai.BadRequestError) as long:
            await api.chat.completions.create(model="qwen-plus", messages=too_long)
        assert long.value.message.endswith("- messages[0].content is longer than 8000 characters")
        assert len(sim.requests) == before
        sim.inject(Fault.http(500))
        with pytest.raises(openai.InternalServerError):
            await api.chat.completions.create(model="qwen-plus", messages=ADA, stream=True)
        sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
        stream = await api.chat.completions.create(model="qwen-plus", messages=ADA, stream=True)
        got: list[str] = []

        async def read() -> None:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIError) as failed:
            await read()
    assert "inappropriate" in failed.value.message
    assert "".join(got)  # what came before the failure was delivered


async def test_aliases_are_listed_and_reach_their_app_or_model(sim: BailianSimulator) -> None:
    """/v1/models lists the apps, the models and the aliases; an alias of an app continues
    the app's conversation, an alias of a model reaches that model."""
    aliases = {"gpt-4o": sim.app_id, "gpt-4o-mini": "qwen-plus"}
    async with Relay(sim, models=["qwen-plus"], aliases=aliases) as relay, client(relay) as api:
        listed = [(m.id, m.owned_by) async for m in api.models.list()]
        assert listed == [
            (sim.app_id, "bailian-app"),
            ("qwen-plus", "bailian-model"),
            ("gpt-4o", "bailian-app"),
            ("gpt-4o-mini", "bailian-model"),
        ]
        assert (await api.models.retrieve("gpt-4o-mini")).owned_by == "bailian-model"
        history: list[Any] = [{"role": "user", "content": "my name is Ada"}]
        first = await api.chat.completions.create(model="gpt-4o", messages=history)
        assert first.model == "gpt-4o"
        assert sim.requests[-1].path == f"/api/v1/apps/{sim.app_id}/completion"
        history += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "what's my name?"},
        ]
        await api.chat.completions.create(model="gpt-4o", messages=history)
        assert sim.requests[-1].body["input"]["session_id"] == sim.requests[-2].session_id
        mini = await api.chat.completions.create(model="gpt-4o-mini", messages=ADA)
        assert mini.choices[0].message.content == REMEMBERED
        assert sim.requests[-1].path == GENERATION
        assert sim.requests[-1].body["model"] == "qwen-plus"


def test_an_alias_must_name_what_the_relay_serves(sim: BailianSimulator) -> None:
    """create_app refuses an alias of nothing served, or one that hides a served name."""
    upstream: Any = {"api_key": sim.api_key, "base_url": sim.base_url, "allow_anonymous": True}
    with pytest.raises(ValueError, match="does not serve"):
        create_app([sim.app_id], aliases={"gpt-4o": "qwen-max"}, **upstream)
    with pytest.raises(ValueError, match="already the name"):
        create_app(
            [sim.app_id], models=["qwen-plus"], aliases={"qwen-plus": sim.app_id}, **upstream
        )


def test_the_docs_examples_run_as_written(tmp_path: Path) -> None:
    """docs/openai.md's Python examples run on the offline simulator: the app's two turns,
    and the model's tool round prints the call and the answer from its result."""
    page = (ROOT / "docs" / "openai.md").read_text(encoding="utf-8")
    app, model = re.findall(r"```python\n(.*?)```", page, re.S)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE_", "TYQW_"))}
    env["XDG_STATE_HOME"] = str(tmp_path)
    printed = []
    for block in (app, model):
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", block],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout.splitlines())
    assert "Ada" in printed[0][0]
    assert printed[1] == [
        "[get_current_weather] {'location': 'Hangzhou'}",
        "The tools returned: Hangzhou: sunny, 21 degrees",
    ]
