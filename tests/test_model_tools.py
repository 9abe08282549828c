"""Tools: ``Session(model=..., tools=[...])`` against the simulator (and a hand-written
server for the bound on rounds).

The schema comes from a function's hints and docstring; the model's calls run (parallel
ones concurrently), each is a ``tool_call`` event, the results go back and the same turn
goes on until the model answers; a tool that raises and arguments that do not fit are
told to the model as error text.
"""

from __future__ import annotations

import asyncio
import enum
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from tyqw import Session, ToolCall
from tyqw._tools import Toolbox
from tyqw.testing import BailianSimulator

from .helpers import RawServerFactory

BOUND = 10.0
FIXTURES = Path(__file__).parent / "fixtures" / "models"


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_current_weather(location: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> str:
    """The weather in a city, now.

    Args:
        location: The city, such as 杭州.
        unit: Degrees in which unit.
        days: How many days ahead.
    """
    return f"{location}：多云，18度"


def model_session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> Session:
    return Session(
        model="qwen-plus",
        api_key=sim.api_key,
        base_url=sim.base_url,
        state_dir=state_dir,
        **kwargs,
    )


def test_the_schema_comes_from_hints_and_docstring() -> None:
    """Types, enums, optionals, defaults and the Args lines make the JSON schema."""

    async def convert(
        amount: float, to: Literal["USD", "CNY"], tags: list[str], note: str = ""
    ) -> dict[str, float]:
        """Convert money.

        :param amount: How much.
        :param to: The currency wanted.
        """
        return {"amount": amount}

    (weather, money) = Toolbox([get_current_weather, convert]).schemas()
    assert weather == {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "The weather in a city, now.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city, such as 杭州."},
                    "unit": {
                        "enum": ["celsius", "fahrenheit"],
                        "description": "Degrees in which unit.",
                    },
                    "days": {"type": "integer", "description": "How many days ahead."},
                },
                "required": ["location"],
            },
        },
    }
    assert money["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "description": "How much."},
            "to": {"enum": ["USD", "CNY"], "description": "The currency wanted."},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": "string"},
        },
        "required": ["amount", "to", "tags"],
    }


def test_a_tool_that_cannot_be_described_is_refused_at_once() -> None:
    """A hint with no JSON schema, or a model-less session, fails when the Session is made."""

    def bad(when: object) -> str:
        return ""

    with pytest.raises(TypeError, match="no JSON schema"):
        Toolbox([bad])
    with pytest.raises(TypeError, match="tools= is for a model session"):
        Session("app", tools=[get_current_weather], api_key="sk-x")


async def test_parallel_calls_run_together_and_the_turn_goes_on(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """Two calls in one round run concurrently; their results come back in one request;
    the same turn ends with the model's answer built from them."""
    started: list[str] = []
    both = asyncio.Event()

    async def get_current_weather(location: str) -> str:
        """The weather in a city."""
        started.append(location)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), BOUND)  # only if the other runs meanwhile
        return f"{location}多云"

    events: list[ToolCall] = []
    async with model_session(sim, state_dir, tools=[get_current_weather]) as session:
        session.on("tool_call", events.append)
        reply = await session.send("杭州和上海的天气怎么样？", parallel_tool_calls=True)
    assert sorted(started) == ["上海", "杭州"]
    assert [(c.name, json.loads(c.arguments), c.result) for c in events] == [
        ("get_current_weather", {"location": "杭州"}, "杭州多云"),
        ("get_current_weather", {"location": "上海"}, "上海多云"),
    ]
    assert reply.tool_calls == tuple(events)
    assert reply.text == "工具返回：杭州多云；上海多云" and reply.finish_reason == "stop"
    first, second = (r.body for r in sim.requests)
    assert first["parameters"]["tools"][0]["function"]["name"] == "get_current_weather"
    sent = second["input"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == [c.id for c in events]
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:]] == [
        (events[0].id, "杭州多云"),
        (events[1].id, "上海多云"),
    ]


async def test_a_raising_tool_is_told_to_the_model(sim: BailianSimulator, state_dir: Path) -> None:
    """The tool's exception becomes error text: in the event, and in what the model reads."""

    def get_current_time(city: str) -> str:
        """The time in a city."""
        raise LookupError(f"no clock in {city}")

    events: list[ToolCall] = []
    async with model_session(sim, state_dir, tools=[get_current_time]) as session:
        session.on("tool_call", events.append)
        reply = await session.send("What time is it in London?")
    (call,) = events
    assert call.result is None and call.error == "the tool raised LookupError: no clock in London"
    told = sim.requests[-1].body["input"]["messages"][-1]
    assert told["content"] == "Error: the tool raised LookupError: no clock in London"
    assert reply.text.endswith("no clock in London") and reply.finish_reason == "stop"


async def test_arguments_that_do_not_fit_are_told_to_the_model(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """A raw schema with its own handler: arguments of the wrong type never reach it."""
    schema = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "integer"}},
                "required": ["location"],
            },
        },
    }
    handled: list[dict[str, Any]] = []
    async with model_session(sim, state_dir, tools=[(schema, handled.append)]) as session:
        reply = await session.send("杭州天气")
    assert handled == []
    (call,) = reply.tool_calls
    assert (
        call.error
        == "the arguments do not fit the tool's schema: 'location' is \"杭州\", not integer"
    )
    assert sim.requests[-1].body["input"]["messages"][-1]["content"] == f"Error: {call.error}"


async def test_a_raw_schema_handler_gets_the_arguments(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """(schema, handler): the handler gets the arguments as one dict; its result goes back."""
    schema = {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    async with model_session(
        sim, state_dir, tools=[(schema, lambda args: {"sky": args["city"]})]
    ) as session:
        reply = await session.send("Weather in Paris?")
    assert reply.tool_calls[0].result == '{"sky": "Paris"}'


async def test_arguments_that_are_not_json_are_reported() -> None:
    """Arguments the model cut short: the call reports it, the tool is not run."""
    ran: list[str] = []
    box = Toolbox([lambda_tool(ran)])
    (done,) = await box.run([ToolCall("call_1", "note", '{"text": "hi')])
    assert ran == [] and done.error is not None
    assert done.error.startswith("the arguments are not valid JSON")
    (unknown,) = await box.run([ToolCall("call_2", "nope", "{}")])
    assert unknown.error == "there is no tool named 'nope' (tools: note)"


def lambda_tool(ran: list[str]) -> Any:
    def note(text: str) -> str:
        """Write a note."""
        ran.append(text)
        return "ok"

    return note


async def test_rounds_are_bounded(raw_server: RawServerFactory, state_dir: Path) -> None:
    """A model that only ever calls tools: after max_tool_rounds the last request asks
    for text (tool_choice "none"), and the turn ends with what it has."""
    server = await raw_server([(FIXTURES / "parallel-tools.sse").read_bytes()])
    async with Session(
        model="qwen-plus",
        api_key="sk-test",
        base_url=server.base_url,
        state_dir=state_dir,
        tools=[get_current_weather],
        max_tool_rounds=2,
    ) as session:
        reply = await session.send("天气")
    bodies = [json.loads(r.split(b"\r\n\r\n", 1)[1]) for r in server.requests]
    assert len(bodies) == 3
    assert [b["parameters"].get("tool_choice") for b in bodies] == [None, None, "none"]
    assert len(reply.tool_calls) == 6  # two rounds ran, the third's calls are left
    assert [c.result for c in reply.tool_calls[:4]] == [
        "浙江省杭州市：多云，18度",
        "上海市：多云，18度",
    ] * 2
    assert reply.finish_reason == "tool_calls"


async def test_stream_runs_the_tools_too(sim: BailianSimulator, state_dir: Path) -> None:
    """stream() yields the answer's messages; the calls are on the stream's reply."""
    async with (
        model_session(sim, state_dir, tools=[get_current_weather]) as session,
        session.stream("北京天气如何？") as stream,
    ):
        text = "".join([m.delta async for m in stream])
    assert text == "工具返回：北京：多云，18度"
    assert [c.result for c in stream.reply.tool_calls] == ["北京：多云，18度"]
