"""Documented usage, type-checked under ``mypy --strict`` (never run).

Each ``assert_type`` fails the type check if tyqw's public types drift; each
``type: ignore[...]`` line must stay an error (``warn_unused_ignores`` is on).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from typing_extensions import assert_type

import tyqw
from tyqw import Citation, Message, Reply, Session, Thought, TokenUsage, WorkflowEvent


async def streaming(session: Session) -> None:
    async for message in session.stream("你好"):
        assert_type(message, Message)
        assert_type(message.delta, str)
        assert_type(message.finish_reason, str | None)
        print(message.no_such_attribute)  # type: ignore[attr-defined]
    async with session.stream("你好", has_thoughts=True) as stream:
        async for message in stream:
            assert_type(message.text, str)
    assert_type(stream.reply, Reply)


async def sending(session: Session) -> None:
    reply = await session.send(
        "你好", enable_web_search=True, rag_options={"pipeline_ids": ["kb"]}
    )
    assert_type(reply, Reply)
    assert_type(reply.citations, tuple[Citation, ...])
    assert_type(session.usage, dict[str, TokenUsage])
    await session.send("你好", enable_websearch=True)  # type: ignore[call-arg]
    await session.send("你好", incremental_output="yes")  # type: ignore[arg-type]
    await session.send("你好", flow_stream_mode="fast")  # type: ignore[arg-type]


def handlers(session: Session) -> None:
    def on_message(message: Message) -> None: ...

    async def on_error(error: tyqw.TyqwError) -> None: ...
    def on_thought(thought: Thought) -> None: ...
    def on_reference(citation: Citation) -> None: ...
    def on_workflow(event: WorkflowEvent) -> None: ...
    def on_reply(reply: Reply) -> None: ...

    registered: Callable[[Message], None] = session.on("message", on_message)
    del registered
    session.on("error", on_error)
    session.on("thought", on_thought)
    session.on("reference", on_reference)
    session.on("workflow", on_workflow)
    session.once("reply", on_reply)
    session.on("message", lambda m: print(m.delta))
    session.on("message", on_error)  # type: ignore[call-overload]
    session.on("reply", on_message)  # type: ignore[call-overload]
    session.on("thoughts", on_thought)  # type: ignore[call-overload]
    session.off("message", on_message)


def errors(error: Exception) -> None:
    if isinstance(error, tyqw.APITimeoutError):
        assert_type(error, tyqw.APITimeoutError)
        timeout: TimeoutError = error
        network: tyqw.APIConnectionError = error
        del timeout, network
    if isinstance(error, tyqw.ConnectionLostError):
        incomplete: tyqw.IncompleteStreamError = error
        del incomplete


async def models() -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return city

    schema = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}

    async def get_time(arguments: dict[str, object]) -> str:
        return "09:30"

    async with Session(
        model="qwen-plus", system="Be brief.", tools=[get_weather, (schema, get_time)]
    ) as session:
        reply = await session.send(
            "hi", max_tokens=100, stop=["\n"], enable_thinking=True, thinking_budget=50
        )
        assert_type(reply.reasoning, str | None)
        assert_type(reply.tool_calls, tuple[tyqw.ToolCall, ...])
        assert_type(session.model, str | None)
        assert_type(session.usage["qwen-plus"].reasoning_tokens, int)
        assert_type(session.usage["qwen-plus"].total_tokens, int)

        def on_tool_call(call: tyqw.ToolCall) -> None:
            assert_type(call.error, str | None)

        session.on("tool_call", on_tool_call)
        async for message in session.stream("hi"):
            assert_type(message.reasoning, str)
        await session.send("hi", max_tokens="100")  # type: ignore[arg-type]


async def settings(http: aiohttp.ClientSession) -> None:
    keep: tyqw.SessionSettings = {"name": "alice", "read_timeout": 60.0, "history": 50}
    async with Session("app", http_session=http, **keep) as session:
        assert_type(session.name, str)
    Session("app", read_timeout="60")  # type: ignore[arg-type]
    Session("app", no_such_setting=1)  # type: ignore[call-arg]
    with tyqw.SyncSession("app", max_retries=3, state_dir="state") as sync:
        assert_type(sync.name, str)
    tyqw.SyncSession("app", http_session=http)  # type: ignore[call-arg]
