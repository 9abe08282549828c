"""The relay's chat dialects read by front ends' own clients: the ``openai`` and ``ai``
npm packages under node (tests/js/dialects.mjs), and LangChain's ``ChatOpenAI``.

The relay and the simulator run in the test's event loop; node runs as a child process
and LangChain's blocking calls in a thread, so the loop keeps serving them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tyqw.testing import BailianSimulator, Fault, default_reply

from .relay_helpers import ALICE, Relay, run_node_script


@pytest.fixture
async def relay(sim: BailianSimulator) -> AsyncIterator[Relay]:
    async with Relay(sim, session_options={"max_retries": 0}) as running:
        yield running


async def run_dialects(
    relay: Relay, kind: str, prompts: list[str], token: str = ALICE, model: str | None = None
) -> list[dict[str, Any]]:
    scenario = {
        "base": relay.root,
        "token": token,
        "model": model or relay.app_ids[0],
        "kind": kind,
        "prompts": prompts,
    }
    return await run_node_script("dialects.mjs", scenario, "openai", "ai")


async def test_openai_npm_package_chats_and_the_app_remembers(
    relay: Relay, sim: BailianSimulator
) -> None:
    """openai-node lists the app as a model, streams two turns with usage, and the second
    turn reaches the app with the first turn's session_id."""
    lines = await run_dialects(relay, "openai", ["my name is Ada", "what's my name?"])
    assert lines[0] == {"models": [relay.app_ids[0]]}
    first, second = lines[1:]
    assert first["text"] == default_reply("my name is Ada", [])
    assert first["role"] == "assistant" and first["finish"] == "stop"
    assert second["text"] == "Your name is Ada. You told me earlier in this conversation."
    assert second["usage"]["completion_tokens"] == len(second["text"])
    assert sim.requests[-1].body["input"]["session_id"] == sim.requests[-2].session_id


async def test_openai_npm_package_streams_a_model_with_its_history(
    sim: BailianSimulator,
) -> None:
    """openai-node lists the served model and its alias, and streams two turns from a
    model through the alias: the second answered from the history the client resent."""
    async with Relay(sim, models=["qwen-plus"], aliases={"gpt-4o": "qwen-plus"}) as relay:
        lines = await run_dialects(
            relay, "openai", ["my name is Ada", "what's my name?"], model="gpt-4o"
        )
    assert lines[0] == {"models": [relay.app_ids[0], "qwen-plus", "gpt-4o"]}
    first, second = lines[1:]
    assert first["role"] == "assistant" and first["finish"] == "stop"
    assert second["text"] == "Your name is Ada. You told me earlier in this conversation."
    assert second["usage"]["completion_tokens"] == len(second["text"])
    sent = sim.requests[-1].body
    assert sent["model"] == "qwen-plus"
    assert [m["role"] for m in sent["input"]["messages"]] == ["user", "assistant", "user"]


async def test_openai_npm_package_raises_its_own_error(
    relay: Relay, sim: BailianSimulator
) -> None:
    """A throttled upstream reaches openai-node as its RateLimitError."""
    sim.inject(Fault.http(429))
    lines = await run_dialects(relay, "openai", ["hi"])
    assert lines[1]["error"] == "RateLimitError" and lines[1]["status"] == 429


async def test_ai_package_reads_the_ui_stream_into_parts(
    relay: Relay, sim: BailianSimulator
) -> None:
    """DefaultChatTransport and readUIMessageStream turn the relay's stream into an
    assistant message with a text part and metadata; the chat's second turn continues
    the conversation."""
    lines = await run_dialects(relay, "ui", ["my name is Ada", "what's my name?"])
    first, second = lines
    assert first["role"] == "assistant" and first["errors"] == []
    texts = [p for p in second["parts"] if p["type"] == "text"]
    assert [t["text"] for t in texts] == [
        "Your name is Ada. You told me earlier in this conversation."
    ]
    assert texts[0]["state"] == "done"
    assert second["metadata"]["conversation"] == "chat-js"
    assert second["metadata"]["session_id"] == first["metadata"]["session_id"]
    assert second["metadata"]["usage"]["output_tokens"] == len(texts[0]["text"])
    assert sim.requests[-1].body["input"]["session_id"] == first["metadata"]["session_id"]


async def test_ai_package_reads_reasoning_sources_and_errors(sim: BailianSimulator) -> None:
    """The ai package's reader accepts every part the relay sends: reasoning,
    source-document, and an error part that it reports through onError."""
    sim.reasoning = True
    options = {"rag_options": {"pipeline_ids": ["kb1"]}}
    async with Relay(sim, turn_options=options) as relay:
        [line] = await run_dialects(relay, "ui", ["what is tyqw?"])
        kinds = [p["type"] for p in line["parts"]]
        assert kinds.index("reasoning") < kinds.index("text")
        assert "source-document" in kinds
        sim.inject(Fault.stream_error(after=2, status=400, code="DataInspectionFailed"))
        [failed] = await run_dialects(relay, "ui", ["hello there"])
    assert len(failed["errors"]) == 1 and "inappropriate" in failed["errors"][0]


# -- LangChain ---------------------------------------------------------------------


async def test_langchain_chat_openai_holds_a_multi_turn_exchange(
    relay: Relay, sim: BailianSimulator
) -> None:
    """ChatOpenAI(base_url=...) keeps its own history; the relay continues one
    conversation with it, so the app remembers the name."""

    def call() -> list[str]:
        model = ChatOpenAI(
            base_url=f"{relay.root}/v1",
            api_key=SecretStr(ALICE),
            model=relay.app_ids[0],
            max_retries=0,
        )
        history: list[BaseMessage] = [HumanMessage("my name is Ada")]
        first = model.invoke(history)
        history += [first, HumanMessage("what's my name?")]
        second = model.invoke(history)
        return [str(first.content), str(second.content)]

    first, second = await asyncio.to_thread(call)
    assert first == default_reply("my name is Ada", [])
    assert second == "Your name is Ada. You told me earlier in this conversation."
    assert sim.requests[-1].body["input"]["session_id"] == sim.requests[-2].session_id
