"""Transcripts in the real service's shapes, replayed byte for byte over a real socket.

Each ``tests/fixtures/*.sse`` file is served as is by a hand-written TCP server, whole
and in slices that ignore event boundaries, and read with ``Session.stream()``; what a
user sees (the ordered messages and the error, if any) is compared with an independent
reading of the same file. See ``tests/fixtures/README.md`` for what each file is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tyqw import APIStatusError, BadRequestError, Message, TyqwError

from .helpers import RawServerFactory, raw_session, transcript_events

FIXTURES = Path(__file__).parent / "fixtures"
CUMULATIVE = {"agent-cumulative.sse"}
TRANSCRIPTS = sorted(p.name for p in FIXTURES.glob("*.sse"))


@dataclass(frozen=True)
class Seen:
    """What a user reads off one message."""

    delta: str
    text: str
    finish_reason: str | None
    session_id: str | None
    request_id: str | None
    references: tuple[str, ...]
    thoughts: tuple[str, ...]
    node: tuple[str, int, bool] | None
    output_tokens: int | None


def seen(message: Message) -> Seen:
    node = message.workflow_message
    models = (message.usage or {}).get("models") or [{}]
    return Seen(
        delta=message.delta,
        text=message.text,
        finish_reason=message.finish_reason,
        session_id=message.session_id,
        request_id=message.request_id,
        references=tuple(r["index_id"] for r in message.doc_references or ()),
        thoughts=tuple(t["action_type"] for t in message.thoughts or ()),
        node=None if node is None else _node(node),
        output_tokens=models[0].get("output_tokens"),
    )


def read_transcript(raw: bytes, cumulative: bool) -> tuple[list[Seen], dict[str, Any] | None]:
    """The messages and the error a transcript holds, read line by line: every ``data:``
    line is one event of the type the last ``event:`` line named."""
    messages: list[Seen] = []
    error: dict[str, Any] | None = None
    text = ""
    for event, status, obj in transcript_events(raw):
        if event == "error":
            error = {**obj, "status": status}
            continue
        out = obj["output"]
        wire = out.get("text", "")
        delta = wire[len(text) :] if cumulative else wire
        text += delta
        node = out.get("workflow_message")
        models = obj["usage"].get("models") or [{}]
        messages.append(
            Seen(
                delta=delta,
                text=text,
                finish_reason=None if out["finish_reason"] == "null" else out["finish_reason"],
                session_id=out["session_id"],
                request_id=obj["request_id"],
                references=tuple(r["index_id"] for r in out.get("doc_references", ())),
                thoughts=tuple(t["action_type"] for t in out.get("thoughts", ())),
                node=None if node is None else _node(node),
                output_tokens=models[0].get("output_tokens"),
            )
        )
    return messages, error


def _node(node: dict[str, Any]) -> tuple[str, int, bool]:
    return node["node_id"], node["node_msg_seq_id"], node["node_is_completed"]


def slices(raw: bytes, how: str) -> list[bytes | float]:
    if how == "whole":
        return [raw]
    size = {"97-byte": 97, "1-byte": 1}[how]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


async def replay(
    raw_server: RawServerFactory,
    state_dir: Path,
    chunks: list[bytes | float],
    *,
    cumulative: bool = False,
) -> tuple[list[Message], TyqwError | None]:
    """Every message of one turn against a server sending ``chunks``, and its error."""
    server = await raw_server(chunks)
    messages: list[Message] = []
    async with raw_session(server.base_url, state_dir) as session:
        try:
            async for message in session.stream("hi", incremental_output=not cumulative):
                messages.append(message)
        except TyqwError as exc:
            return messages, exc
    return messages, None


# Whole, in slices across event boundaries, and (the short ones) one byte per write.
REPLAYS = [
    (name, how)
    for name in TRANSCRIPTS
    for how in ("whole", "97-byte", "1-byte")
    if how != "1-byte" or (FIXTURES / name).stat().st_size <= 4096
]


@pytest.mark.parametrize(("name", "how"), REPLAYS)
async def test_transcript_replays_as_its_messages(
    raw_server: RawServerFactory, state_dir: Path, name: str, how: str
) -> None:
    """Every transcript gives its messages in order, then its error, however it is split."""
    raw = (FIXTURES / name).read_bytes()
    cumulative = name in CUMULATIVE
    messages, error = await replay(raw_server, state_dir, slices(raw, how), cumulative=cumulative)
    expected, expected_error = read_transcript(raw, cumulative)
    assert [seen(m) for m in messages] == expected
    if expected_error is None:
        assert error is None
        assert messages[-1].finish_reason == "stop"
    else:
        assert isinstance(error, APIStatusError)
        assert (error.status_code, error.code, error.message, error.request_id) == (
            expected_error["status"],
            expected_error["code"],
            expected_error["message"],
            expected_error["request_id"],
        )


async def test_rag_reply_citations_grow_as_the_markers_arrive(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """The 65-event RAG reply: doc_references from event 9 on, [4] [2,4] [2,3,4] [2,3,4,5]."""
    messages, error = await replay(
        raw_server, state_dir, [(FIXTURES / "rag-incremental.sse").read_bytes()]
    )
    assert error is None
    assert len(messages) == 65
    refs = [seen(m).references for m in messages]
    changes = [(i, r) for i, r in enumerate(refs, 1) if i == 1 or r != refs[i - 2]]
    assert changes == [
        (1, ()),
        (9, ("4",)),
        (26, ("2", "4")),
        (47, ("2", "3", "4")),
        (63, ("2", "3", "4", "5")),
    ]
    assert messages[7].text.endswith("<ref>[4]</")  # the marker is completed by event 9
    assert messages[-1].delta == "" and messages[-1].finish_reason == "stop"
    assert messages[-1].text.count("<ref>") == 4


async def test_agent_thoughts_arrive_on_every_event(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """The reasoning agent's reply carries its retrieval and reasoning thoughts throughout."""
    raw = (FIXTURES / "agent-thoughts-incremental.sse").read_bytes()
    messages, error = await replay(raw_server, state_dir, [raw])
    assert error is None
    assert all(seen(m).thoughts == ("agentRag", "reasoning") for m in messages)
    rag, reasoning = messages[-1].thoughts or []
    chunks = json.loads(rag["observation"])
    assert [c["referenceIndex"] for c in chunks] == [1, 2]
    assert reasoning["thought"] == reasoning["response"]
    assert (
        messages[-1].text
        == "先用 pip 安装 tyqw<ref>[1]</ref>，然后创建 Session 并调用 send()<ref>[2]</ref>。"
    )


async def test_error_after_partial_output_keeps_the_text(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """An event:error after three events: the error is typed, the partial text kept."""
    raw = (FIXTURES / "error-after-partial.sse").read_bytes()
    messages, error = await replay(raw_server, state_dir, [raw])
    assert [m.delta for m in messages] == ["关于这个", "问题，", "我可以"]
    assert isinstance(error, BadRequestError)
    assert error.code == "DataInspectionFailed"
    assert error.reply is not None and error.reply.text == "关于这个问题，我可以"


async def test_bad_app_id_is_a_bad_request_with_no_message(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """The in-band answer to an unknown app id: no message, one BadRequestError (HTTP 400)."""
    messages, error = await replay(
        raw_server, state_dir, [(FIXTURES / "bad-app-id.sse").read_bytes()]
    )
    assert messages == []
    assert isinstance(error, BadRequestError)
    assert (error.status_code, error.code) == (400, "InvalidParameter")


async def test_workflow_nodes_then_the_final_text(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """message_format: the LLM node's pieces in order, then the whole text with stop."""
    raw = (FIXTURES / "workflow-message-format.sse").read_bytes()
    messages, error = await replay(raw_server, state_dir, [raw])
    assert error is None
    nodes = [m.workflow_message for m in messages if m.workflow_message]
    assert "".join(n["message"]["content"] for n in nodes) == "代码已经格式化完成。"
    assert [n["node_is_completed"] for n in nodes] == [False, False, False, True]
    assert messages[-1].text == "代码已经格式化完成。"
    assert messages[-1].finish_reason == "stop"
