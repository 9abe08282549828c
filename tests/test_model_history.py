"""A model session's history, kept by tyqw: each turn sends the system message, the
earlier exchanges from the conversation's transcript and the new prompt, trimmed
oldest-first to a budget; memory survives a restart and is shared by workers."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tyqw import ContextLengthError, Exchange, Reply, Session, ToolCall
from tyqw.stores import Store
from tyqw.testing import BailianSimulator

from .cli_helpers import clean_env, tyqw_run
from .helpers import missing

NAME_REPLY = "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"


def model_session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> Session:
    kwargs.setdefault("model", "qwen-plus")
    return Session(api_key=sim.api_key, base_url=sim.base_url, state_dir=state_dir, **kwargs)


def sent(sim: BailianSimulator) -> list[tuple[str, str]]:
    """The (role, content) of each message the last request sent."""
    return [(m["role"], m["content"]) for m in sim.requests[-1].body["input"]["messages"]]


async def test_memory_survives_a_restart(sim: BailianSimulator, state_dir: Path) -> None:
    """The name told before the process ended is known after: the history is sent again."""
    async with model_session(sim, state_dir, system="你是助手。") as session:
        told = await session.send("我叫小明")
    async with model_session(sim, state_dir, system="你是助手。") as session:
        reply = await session.send("我叫什么名字？")
        assert session.session_id == told.session_id
    assert reply.text == NAME_REPLY
    assert sent(sim) == [
        ("system", "你是助手。"),
        ("user", "我叫小明"),
        ("assistant", told.text),
        ("user", "我叫什么名字？"),
    ]


async def test_clear_starts_without_history(sim: BailianSimulator, state_dir: Path) -> None:
    """After clear() the model no longer knows the name: nothing earlier is sent."""
    async with model_session(sim, state_dir) as session:
        await session.send("我叫小明")
        session.clear()
        reply = await session.send("我叫什么名字？")
    assert sent(sim) == [("user", "我叫什么名字？")]
    assert reply.text.startswith("你还没告诉我你的名字呢")


async def test_trimming_keeps_the_system_message_and_the_newest(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """Past the budget the oldest exchanges go first, whole; the system message stays."""
    prompts = ["one", "two", "three", "four"]
    async with model_session(sim, state_dir, system="S", max_history_chars=100) as session:
        said = [(await session.send(p)).text for p in prompts]
        await session.send("five")
    fits: list[list[tuple[str, str]]] = []
    used = 0
    for prompt, text in reversed(list(zip(prompts, said, strict=True))):
        if used + len(prompt) + len(text) > 100:
            break
        used += len(prompt) + len(text)
        fits.insert(0, [("user", prompt), ("assistant", text)])
    assert 0 < len(fits) < len(prompts)  # the budget cut something, and kept something
    assert sent(sim) == [("system", "S"), *[m for pair in fits for m in pair], ("user", "five")]


async def test_a_long_conversation_never_reaches_the_context_limit(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """With a budget under the context, twenty turns all work; with none, the service
    refuses with ContextLengthError once the history outgrows it."""
    sim.max_input_tokens = 600
    async with model_session(sim, state_dir, max_history_chars=400) as session:
        for n in range(20):
            await session.send(f"turn {n}")
    async with model_session(sim, state_dir, name="unbounded", max_history_chars=10**6) as s:
        for n in range(20):
            try:
                await s.send(f"turn {n}")
            except ContextLengthError:
                break
        else:
            pytest.fail("twenty turns without a budget fitted a 600-token context")


async def test_tool_calls_and_results_are_in_the_transcript(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """A tool turn is kept whole (calls, results, answer) and sent again as such."""

    def get_current_weather(location: str) -> str:
        """The weather in a city."""
        return f"{location}晴"

    async with model_session(sim, state_dir, tools=[get_current_weather]) as session:
        first = await session.send("杭州天气怎么样？")
        await session.send("谢谢")
        (exchange, _) = await session.history()
    assert exchange.reply.tool_calls == first.tool_calls
    (call,) = first.tool_calls
    messages = sim.requests[-1].body["input"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["tool_calls"][0]["id"] == call.id
    assert (messages[2]["tool_call_id"], messages[2]["content"]) == (call.id, "杭州晴")
    assert messages[3]["content"] == first.text == "工具返回：杭州晴"


def test_an_exchange_keeps_reasoning_and_tool_calls_in_its_json() -> None:
    """The JSON form round-trips a model's reasoning and calls; an app's has no new keys."""
    now = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    calls = (
        ToolCall("call_1", "f", '{"a": 1}', "ok"),
        ToolCall("call_2", "g", "{", None, "bad JSON"),
    )
    reply = Reply("answer", "s", "r", "stop", reasoning="because", tool_calls=calls)
    data = json.loads(json.dumps(Exchange("q", reply, now, now).to_dict()))
    back = Exchange.from_dict(data)
    assert (back.reply.reasoning, back.reply.tool_calls) == ("because", calls)
    plain = Exchange("q", Reply("a", "s", "r", "stop"), now, now).to_dict()
    assert "reasoning" not in plain["reply"] and "tool_calls" not in plain["reply"]
    assert Exchange.from_dict(plain).reply.tool_calls == ()


async def test_three_workers_share_one_history(sim: BailianSimulator, redis_url: str) -> None:
    """Three Sessions on one RedisStore take turns; each sends what the others were told."""
    try:
        from tyqw.stores import RedisStore
    except ImportError:
        missing("RedisStore needs redis-py: pip install 'tyqw[redis]'")
    stores: list[Store] = [
        RedisStore.from_url(redis_url, key_prefix=f"model-history-{os.getpid()}:")
        for _ in range(3)
    ]
    workers = [
        Session(model="qwen-plus", name="ada", api_key=sim.api_key, base_url=sim.base_url, store=s)
        for s in stores
    ]
    try:
        await workers[0].send("my name is Ada")
        await workers[1].send("hello")
        reply = await workers[2].send("what's my name?")
        history = await workers[0].history()
    finally:
        for worker in workers:
            await worker.aclose()
        for store in stores:
            await store.aclose()
    assert reply.text == "Your name is Ada. You told me earlier in this conversation."
    assert [e.prompt for e in history] == ["my name is Ada", "hello", "what's my name?"]
    assert [m for m in sent(sim) if m[0] == "user"] == [
        ("user", "my name is Ada"),
        ("user", "hello"),
        ("user", "what's my name?"),
    ]


def test_the_cli_sends_the_history(tmp_path: Path) -> None:
    """tyqw chat --model, offline: the second line is answered from the first."""
    chat = tyqw_run(
        clean_env(tmp_path),
        "chat",
        "--model",
        "qwen-plus",
        "--delay",
        "0",
        stdin="我叫小明\n我叫什么名字？\n",
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.rstrip().endswith(NAME_REPLY)
