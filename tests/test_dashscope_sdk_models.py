"""The official ``dashscope`` SDK's ``Generation.call`` (sync) and ``AioGeneration.call``
(async) against the simulator's text-generation endpoint, run as ``tyqw simulate`` and in
process: streams, multi-turn by the SDK's own messages, thinking, tools, typed errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tyqw.testing import default_reply

from .helpers import missing
from .simulate_process import BOUND
from .test_dashscope_sdk import Start, Target, start  # noqa: F401  (the fixture)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
def dashscope() -> Iterator[Any]:
    """The ``dashscope`` module; its shared HTTP session is closed after each test."""
    try:
        import dashscope
    except ImportError:
        missing("the official SDK is a dev dependency: pip install -e '.[dev]'")
    yield dashscope
    dashscope.close_shared_sync_session()


def generate(dashscope: Any, target: Target, messages: list[dict[str, Any]], **kw: Any) -> Any:
    kw.setdefault("model", "qwen-plus")
    return dashscope.Generation.call(
        messages=messages,
        api_key=target.api_key,
        base_address=target.base_url,
        request_timeout=BOUND,
        **kw,
    )


STREAM = {"stream": True, "incremental_output": True, "result_format": "message"}


def test_generation_streams(dashscope: Any, start: Start) -> None:  # noqa: F811
    """The issue's call: every chunk 200, the pieces make the reply, the last says stop."""
    with start() as target:
        chunks = list(
            generate(dashscope, target, [{"role": "user", "content": "hello"}], **STREAM)
        )
    assert [c.status_code for c in chunks] == [200] * len(chunks)
    contents = [c.output.choices[0].message.content for c in chunks]
    assert "".join(contents) == default_reply("hello", [])
    assert [c.output.choices[0].finish_reason for c in chunks][-2:] == ["null", "stop"]
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.input_tokens + len(
        contents[-2]
    ) * 0 + (chunks[-1].usage.output_tokens)


def test_multi_turn_by_its_own_messages(dashscope: Any, start: Start) -> None:  # noqa: F811
    """The SDK keeps the history; the simulator answers from it."""
    with start() as target:
        messages = [{"role": "user", "content": "我叫小明"}]
        first = generate(dashscope, target, messages, result_format="message")
        messages.append({"role": "assistant", "content": first.output.choices[0].message.content})
        messages.append({"role": "user", "content": "我叫什么名字？"})
        chunks = list(generate(dashscope, target, messages, **STREAM))
    text = "".join(c.output.choices[0].message.content for c in chunks)
    assert text == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"


def test_thinking_and_a_tool_call(dashscope: Any, start: Start) -> None:  # noqa: F811
    """enable_thinking streams reasoning_content first; a weather question calls the tool."""
    with start() as target:
        thought = list(
            generate(
                dashscope,
                target,
                [{"role": "user", "content": "hi"}],
                **STREAM,
                enable_thinking=True,
            )
        )
        called = generate(
            dashscope,
            target,
            [{"role": "user", "content": "杭州天气怎么样？"}],
            result_format="message",
            tools=[WEATHER],
        )
    reasoning = [c.output.choices[0].message.reasoning_content for c in thought]
    assert reasoning[0] and reasoning[-1] == ""
    (call,) = called.output.choices[0].message.tool_calls
    assert call["function"]["name"] == "get_current_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "杭州"}
    assert called.output.choices[0].finish_reason == "tool_calls"


def test_errors_are_the_service_codes(dashscope: Any, start: Start) -> None:  # noqa: F811
    """A wrong key, and a bad body on a stream: the SDK's status and code."""
    with start() as target:
        wrong = generate(
            dashscope, Target(target.base_url, "sk-wrong", ""), [{"role": "user", "content": "hi"}]
        )
        streamed = list(generate(dashscope, target, [{"role": "tool", "content": "1"}], **STREAM))
    assert (wrong.status_code, wrong.code) == (401, "InvalidApiKey")
    (error,) = streamed
    assert (error.status_code, error.code) == (400, "InvalidParameter")
    assert 'role "tool"' in error.message


def test_async_generation_streams(dashscope: Any, start: Start) -> None:  # noqa: F811
    """AioGeneration.call, the SDK's asyncio client, reads the same stream."""

    from dashscope.api_entities.aio_session import close_shared_aio_session

    async def run(target: Target) -> list[Any]:
        try:
            chunks = await dashscope.AioGeneration.call(
                model="qwen-plus",
                messages=[{"role": "user", "content": "hello"}],
                api_key=target.api_key,
                base_address=target.base_url,
                **STREAM,
            )
            return [chunk async for chunk in chunks]
        finally:
            await close_shared_aio_session()

    with start() as target:
        chunks = asyncio.run(run(target))
    text = "".join(c.output.choices[0].message.content for c in chunks)
    assert text == default_reply("hello", [])
