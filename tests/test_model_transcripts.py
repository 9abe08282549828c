"""Model replies (the text-generation endpoint) in the real service's shapes, replayed
byte for byte over a real socket through ``Session(model=...)``.

Each ``tests/fixtures/models/*.sse`` file is served as is, whole and in slices that
ignore event boundaries (see ``tests/fixtures/README.md``); what a user sees (each
message's text, reasoning, finish reason, request id and tokens; the reply's tool calls
and usage; the error) is compared with an independent reading of the file that follows
the protocol reference's accumulator rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tyqw import APIStatusError, BadRequestError, Message, Reply, Session, TokenUsage, TyqwError

from .helpers import RawServerFactory, transcript_events
from .test_transcripts import slices

FIXTURES = Path(__file__).parent / "fixtures" / "models"
TRANSCRIPTS = sorted(p.name for p in FIXTURES.glob("*.sse"))


@dataclass(frozen=True)
class Seen:
    """What a user reads off one message of a model's reply."""

    delta: str
    text: str
    reasoning: str
    finish_reason: str | None
    request_id: str | None
    output_tokens: int | None


def seen(message: Message) -> Seen:
    return Seen(
        delta=message.delta,
        text=message.text,
        reasoning=message.reasoning,
        finish_reason=message.finish_reason,
        request_id=message.request_id,
        output_tokens=(message.usage or {}).get("output_tokens"),
    )


@dataclass
class Expected:
    """A transcript read line by line: every ``data:`` line is one event."""

    messages: list[Seen]
    reasoning: str | None
    tool_calls: list[tuple[str, str, str]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(part.get("text", "") for part in value)
    return value or ""


def read_transcript(raw: bytes) -> Expected:
    """The protocol reference's accumulator: text and reasoning concatenate, tool calls
    group by index, the finish reason is the last one that is not "null", usage the last."""
    expected = Expected([], None, [], None, None)
    text, reasoning = "", ""
    calls: dict[int, list[str]] = {}
    for event, status, obj in transcript_events(raw):
        if event == "error":
            expected.error = {**obj, "status": status}
            continue
        out = obj["output"]
        if "choices" in out:
            choice = out["choices"][0]
            message, finish = choice["message"], choice["finish_reason"]
        else:
            message, finish = {"content": out["text"]}, out["finish_reason"]
        delta = _text(message.get("content"))
        thought = _text(message.get("reasoning_content"))
        for fragment in message.get("tool_calls", ()):
            call = calls.setdefault(fragment["index"], ["", "", ""])
            call[0] = call[0] or fragment.get("id", "")
            call[1] += fragment.get("function", {}).get("name", "")
            call[2] += fragment.get("function", {}).get("arguments", "")
        text += delta
        reasoning += thought
        if obj["usage"]:
            expected.usage = obj["usage"]
        expected.messages.append(
            Seen(
                delta=delta,
                text=text,
                reasoning=thought,
                finish_reason=None if finish == "null" else finish,
                request_id=obj["request_id"],
                output_tokens=obj["usage"].get("output_tokens"),
            )
        )
    expected.reasoning = reasoning or None
    expected.tool_calls = [tuple(calls[i]) for i in sorted(calls)]  # type: ignore[misc]
    return expected


async def replay(
    raw_server: RawServerFactory, state_dir: Path, chunks: list[bytes | float]
) -> tuple[list[Message], Reply, dict[str, TokenUsage], TyqwError | None]:
    """Every message of one model turn against a server sending ``chunks``, the reply,
    the session's usage afterwards, and the error."""
    server = await raw_server(chunks)
    messages: list[Message] = []
    error: TyqwError | None = None
    async with Session(
        model="qwen-plus", api_key="sk-test", base_url=server.base_url, state_dir=state_dir
    ) as session:
        stream = session.stream("hi")
        try:
            async for message in stream:
                messages.append(message)
        except TyqwError as exc:
            error = exc
        return messages, stream.reply, session.usage, error


REPLAYS = [(name, how) for name in TRANSCRIPTS for how in ("whole", "97-byte", "1-byte")]


@pytest.mark.parametrize(("name", "how"), REPLAYS)
async def test_model_transcript_replays_as_its_messages(
    raw_server: RawServerFactory, state_dir: Path, name: str, how: str
) -> None:
    """Every model transcript gives its messages, reasoning, tool calls, usage and error."""
    raw = (FIXTURES / name).read_bytes()
    messages, reply, usage, error = await replay(raw_server, state_dir, slices(raw, how))
    expected = read_transcript(raw)
    assert [seen(m) for m in messages] == expected.messages
    if expected.error is not None:
        assert isinstance(error, APIStatusError)
        assert (error.status_code, error.code, error.message, error.request_id) == (
            expected.error["status"],
            expected.error["code"],
            expected.error["message"],
            expected.error["request_id"],
        )
        return
    assert error is None
    assert reply.finish_reason == messages[-1].finish_reason != None  # noqa: E711
    assert reply.text == messages[-1].text
    assert reply.reasoning == expected.reasoning
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == expected.tool_calls
    assert reply.usage == expected.usage
    tokens = expected.usage or {}
    reasoned = tokens.get("output_tokens_details", {}).get("reasoning_tokens", 0)
    assert usage == {
        "qwen-plus": TokenUsage(tokens["input_tokens"], tokens["output_tokens"], reasoned)
    }


async def test_reasoning_is_kept_apart_from_the_answer(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """A thinking model's reasoning never leaks into the text, and arrives as thoughts."""
    raw = (FIXTURES / "reasoning-no-blank-lines.sse").read_bytes()
    server = await raw_server([raw])
    thoughts: list[str] = []
    async with Session(
        model="qwen-plus", api_key="sk-test", base_url=server.base_url, state_dir=state_dir
    ) as session:
        session.on("thought", lambda t: thoughts.append(t.text))
        reply = await session.send("1+1是多少")
    assert reply.text == "1+1等于2。"
    assert reply.reasoning == "嗯，用户问的是1+1是多少"
    assert "".join(thoughts) == reply.reasoning
    assert session.usage["qwen-plus"].reasoning_tokens == 10
    assert session.usage["qwen-plus"].total_tokens == 38


async def test_parallel_tool_call_fragments_are_grouped_by_index(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Two calls streamed in fragments, continuations with empty ids, end as two calls."""
    raw = (FIXTURES / "parallel-tools.sse").read_bytes()
    _, reply, _, error = await replay(raw_server, state_dir, [raw])
    assert error is None and reply.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("call_29a870e7106f45deb8add3", "get_current_weather", {"location": "浙江省杭州市"}),
        ("call_026e44bb31a74266949a20", "get_current_weather", {"location": "上海市"}),
    ]


async def test_the_captured_refusal_is_a_bad_request(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """The in-band error frame of a rejected request is raised as BadRequestError."""
    raw = (FIXTURES / "parameter-error.sse").read_bytes()
    _, reply, _, error = await replay(raw_server, state_dir, [raw])
    assert isinstance(error, BadRequestError) and error.code == "InvalidParameter"
    assert reply.text == ""
