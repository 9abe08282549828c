"""Turn-level events (thought, reference, workflow, reply), citations and usage.

The service repeats every thought and every reference on each event; the events
announce each once, in stream order, awaited like message handlers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import tyqw
from tyqw import Citation, Reply, Session, Thought, TokenUsage, WorkflowEvent
from tyqw.stores import MemoryStore
from tyqw.testing import BailianSimulator, Fault

from .helpers import SessionFactory, TcpServerFactory, bailian_event, raw_session, read_request

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
SID = "c" * 32


def ref(index_id: str, title: str) -> dict[str, Any]:
    return {
        "index_id": index_id,
        "title": title,
        "doc_id": f"doc-{index_id}",
        "text": f"摘录{index_id}",
    }


# A reply citing knowledge-base chunks 4, 2, 4 again, then 3: the list grows as the
# markers appear and is repeated whole on every later event, as the service does.
CITED = [
    ("杭州", None),
    ("西湖<ref>[4]</ref>", [ref("4", "西湖")]),
    ("和雷峰塔<ref>[2]</ref>", [ref("4", "西湖"), ref("2", "雷峰塔")]),
    ("，西湖<ref>[4]</ref>", [ref("4", "西湖"), ref("2", "雷峰塔")]),
    (
        "与龙井<ref>[3]</ref>。",
        [ref("4", "西湖"), ref("2", "雷峰塔"), ref("3", "龙井"), ref("9", "未引")],
    ),
]
THOUGHTS = [
    {"action_type": "agentRag", "action": "rag", "action_name": "知识检索", "observation": "[]"},
    {
        "action_type": "reasoning",
        "action": "reasoning",
        "action_name": "思考过程",
        "thought": "想",
    },
]


def cited_stream() -> bytes:
    body = b""
    for n, (piece, refs) in enumerate(CITED, 1):
        output: dict[str, Any] = {"session_id": SID, "finish_reason": "null", "text": piece}
        output["thoughts"] = THOUGHTS[: 1 + (n > 2)]
        if refs is not None:
            output["doc_references"] = refs
        body += bailian_event(n, output)
    last = {"session_id": SID, "finish_reason": "stop", "text": "", "doc_references": CITED[-1][1]}
    return body + bailian_event(len(CITED) + 1, {**last, "thoughts": THOUGHTS})


async def serve(tcp_server: TcpServerFactory, body: bytes) -> str:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + body)
        await writer.drain()

    return await tcp_server(script)


async def test_each_thought_and_reference_is_announced_once_in_order(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """thought and reference fire once per item, as it first appears, among the
    messages in stream order (a thought before the message that brought it, a citation
    after); the repeated lists announce nothing new."""
    seen: list[tuple[str, str]] = []
    async with raw_session(await serve(tcp_server, cited_stream()), state_dir) as session:
        session.on("message", lambda m: seen.append(("message", m.delta)))
        session.on("thought", lambda t: seen.append(("thought", t.action_name or "")))
        session.on("reference", lambda c: seen.append(("reference", c.marker)))
        await session.send("hi")
    assert seen == [
        ("thought", "知识检索"),
        ("message", "杭州"),
        ("message", "西湖<ref>[4]</ref>"),
        ("reference", "[4]"),
        ("thought", "思考过程"),
        ("message", "和雷峰塔<ref>[2]</ref>"),
        ("reference", "[2]"),
        ("message", "，西湖<ref>[4]</ref>"),
        ("message", "与龙井<ref>[3]</ref>。"),
        ("reference", "[3]"),
        ("reference", "[9]"),
        ("message", ""),
    ]


async def test_reply_citations_follow_the_text(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """Reply.citations lists the cited documents in the order the text first cites
    them (ids are chunk numbers, not 1..n; [4] cited twice counts once; [9] is not
    cited), and display_text shows the markers as plain [n]."""
    async with raw_session(await serve(tcp_server, cited_stream()), state_dir) as session:
        reply = await session.send("hi")
    assert [(c.marker, c.title, c.doc_id, c.excerpt) for c in reply.citations] == [
        ("[4]", "西湖", "doc-4", "摘录4"),
        ("[2]", "雷峰塔", "doc-2", "摘录2"),
        ("[3]", "龙井", "doc-3", "摘录3"),
    ]
    assert reply.display_text == "杭州西湖[4]和雷峰塔[2]，西湖[4]与龙井[3]。"
    assert "<ref>[4]</ref>" in reply.text  # the raw text stays available


def test_citations_of_a_hand_made_reply() -> None:
    """A Reply built by hand works out its citations too; several ids in one marker."""
    reply = Reply(
        text="甲<ref>[7][5]</ref>乙<ref>[5]</ref>丙<ref>[8]</ref>",
        session_id=None,
        request_id=None,
        finish_reason="stop",
        doc_references=[ref("5", "五"), ref("7", "七")],
    )
    assert [c.index_id for c in reply.citations] == ["7", "5"]
    assert reply.display_text == "甲[7][5]乙[5]丙[8]"


async def test_thoughts_from_the_simulator(make_session: SessionFactory) -> None:
    """has_thoughts: the simulator repeats its thoughts (retrieval, memory) on every
    event; each is announced once, as a Thought with readable text."""
    thoughts: list[Thought] = []
    session = make_session()
    session.on("thought", thoughts.append)
    reply = await session.send(
        "介绍一下西湖。", has_thoughts=True, rag_options={"pipeline_ids": ["kb"]}, memory_id="m1"
    )
    assert reply.thoughts and len(reply.thoughts) >= 2
    assert len(thoughts) == len(reply.thoughts)
    assert all(t.text for t in thoughts)
    assert [t.raw for t in thoughts] == reply.thoughts


async def test_workflow_events(make_session: SessionFactory) -> None:
    """flow_stream_mode message_format: one workflow event per node event, in order,
    the last of a node completed; their content adds up to the node's output."""
    events: list[WorkflowEvent] = []
    session = make_session()
    session.on("workflow", events.append)
    reply = await session.send("hello", flow_stream_mode="message_format")
    llm = [e for e in events if e.node_type == "LLM"]
    assert llm and llm[-1].completed and not any(e.completed for e in llm[:-1])
    assert "".join(e.content for e in llm) == reply.text


async def test_reply_fires_once_per_turn_also_on_failure(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """reply gets the turn's Reply when it ends: on success, on a failure an error
    handler heard, and on a failure send() raises (before it raises)."""
    replies: list[Reply] = []
    session = make_session(max_retries=0)
    session.on("reply", replies.append)
    ok = await session.send("hi")
    sim.inject(Fault.stream_error(after=1, status=500))
    with pytest.raises(tyqw.InternalServerError) as info:
        await session.send("hi")
    session.on("error", lambda e: None)
    sim.inject(Fault.http(400))
    failed = await session.send("hi")
    assert replies[0] is ok and replies[2] is failed
    assert replies[1].error is info.value and replies[1].text == info.value.reply.text  # type: ignore[union-attr]
    assert len(replies) == 3 and failed.error is not None


async def test_async_handlers_of_turn_events_are_awaited_in_order(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """A coroutine reference handler finishes before the next message is handled."""
    order: list[str] = []

    async def slow_reference(citation: Citation) -> None:
        await asyncio.sleep(0.01)  # I/O in a handler, not a wait for an event
        order.append(citation.marker)

    async with raw_session(await serve(tcp_server, cited_stream()), state_dir) as session:
        session.on("reference", slow_reference)
        session.on("message", lambda m: order.append("m"))
        await session.send("hi")
    assert order == ["m", "m", "[4]", "m", "[2]", "m", "m", "[3]", "[9]", "m"]


async def test_a_raising_turn_event_handler_is_a_handler_error(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """A thought handler that raises reaches the error handlers as a HandlerError, and
    the turn goes on."""
    errors: list[tyqw.TyqwError] = []

    def broken(thought: Thought) -> None:
        raise ValueError("bad handler")

    async with raw_session(await serve(tcp_server, cited_stream()), state_dir) as session:
        session.on("thought", broken)
        session.on("error", errors.append)
        reply = await session.send("hi")
    assert reply.error is None and reply.finish_reason == "stop"
    assert [type(e) for e in errors] == [tyqw.HandlerError, tyqw.HandlerError]
    assert isinstance(errors[0].__cause__, ValueError)


def test_unknown_events_are_refused(tmp_path: Path) -> None:
    """on() names the events tyqw emits when given another."""
    session = Session("app", api_key="sk-x", state_dir=tmp_path)
    with pytest.raises(ValueError, match="'reference'"):
        session.on("citation", print)  # type: ignore[call-overload]


# -- usage across the conversation ---------------------------------------------------------


async def test_usage_adds_up_per_model_and_clear_resets_it(sim: BailianSimulator) -> None:
    """session.usage sums each turn's tokens per model; clear() starts it at zero."""
    store = MemoryStore()
    async with Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store) as s:
        first = await s.send("你好")
        second = await s.send("再说一句")
        [model] = first.usage["models"]  # type: ignore[index]
        [model2] = second.usage["models"]  # type: ignore[index]
        expected = TokenUsage(model["input_tokens"], model["output_tokens"]) + TokenUsage(
            model2["input_tokens"], model2["output_tokens"]
        )
        assert s.usage == {sim.model_id: expected}
        s.clear()
        assert s.usage == {}
    async with Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store) as s:
        assert s.usage == {}


async def test_usage_survives_a_restart(sim: BailianSimulator) -> None:
    """The totals are kept in the store with the conversation id."""
    store = MemoryStore()
    options: dict[str, Any] = {"api_key": sim.api_key, "base_url": sim.base_url, "store": store}
    async with Session(sim.app_id, **options) as s:
        await s.send("你好")
        before = s.usage
    async with Session(sim.app_id, **options) as again:
        assert again.usage == before and before
        await again.send("还记得吗")
        assert again.usage[sim.model_id].input_tokens > before[sim.model_id].input_tokens
