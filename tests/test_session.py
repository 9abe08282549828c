"""Session: turns, events, conversations and options against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import tyqw
from tyqw import Message, Session
from tyqw.testing import BailianSimulator, Fault

from .helpers import SessionFactory, raw_session, sim_session, stored_file

BOUND = 5.0


async def test_multi_turn_keeps_context(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Turn two carries turn one's session id, so the app remembers the name."""
    session = make_session()
    first = await session.send("你好，我叫小明")
    second = await session.send("我叫什么名字？")
    assert first.session_id and second.session_id == first.session_id
    assert "小明" in second.text
    assert sim.requests[0].body["input"].get("session_id") is None
    assert sim.requests[1].body["input"]["session_id"] == first.session_id


async def test_messages_stream_in_order_with_delta_and_text(make_session: SessionFactory) -> None:
    """Each message adds a delta; text is the reply so far; the last has finish 'stop'."""
    session = make_session()
    seen: list[Message] = []
    session.on("message", seen.append)
    reply = await session.send("hello there")
    assert len(seen) > 2
    assert "".join(m.delta for m in seen) == reply.text
    for i, message in enumerate(seen):
        assert message.text == "".join(m.delta for m in seen[: i + 1])
    assert [m.finish_reason for m in seen[:-1]] == [None] * (len(seen) - 1)
    assert seen[-1].finish_reason == "stop" and reply.finish_reason == "stop"
    assert all(m.session_id == reply.session_id for m in seen)
    assert seen[0].request_id == reply.request_id
    assert reply.usage and reply.usage["models"][0]["output_tokens"] > 0


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "cumulative"])
async def test_delta_and_text_right_in_both_wire_modes(
    make_session: SessionFactory, sim: BailianSimulator, incremental: bool
) -> None:
    """Cumulative events (each repeating all text) give the same deltas as incremental."""
    session = make_session()
    messages = [m async for m in session.stream("hello", incremental_output=incremental)]
    assert sim.requests[-1].body["parameters"]["incremental_output"] is incremental
    deltas = [m.delta for m in messages]
    wire = [m.raw["output"]["text"] for m in messages]
    if incremental:
        assert wire == deltas
    else:
        assert wire[-1] == messages[-1].text  # the service repeats everything
        assert wire[-2] == messages[-2].text
    assert "".join(deltas) == messages[-1].text
    assert messages[-1].text == sim.history(messages[-1].session_id)[-1][1]  # type: ignore[index, arg-type]


async def test_async_handlers_finish_in_order(make_session: SessionFactory) -> None:
    """An async handler that awaits still sees messages one at a time, in order."""
    session = make_session()
    log: list[tuple[str, int]] = []
    count = 0

    async def slow(message: Message) -> None:
        nonlocal count
        count += 1
        n = count
        log.append(("start", n))
        await asyncio.sleep(0)  # yield to the loop, as a handler writing to a socket would
        await asyncio.sleep(0)
        log.append(("end", n))

    session.on("message", slow)
    await session.send("hello")
    assert count > 2
    expected = [(kind, n) for n in range(1, count + 1) for kind in ("start", "end")]
    assert log == expected  # and every handler had finished when send() returned


async def test_sync_and_async_handlers_interleave_per_message(
    make_session: SessionFactory,
) -> None:
    """Handlers of one message (sync and async) all run before the next message's."""
    session = make_session()
    log: list[str] = []

    async def first(m: Message) -> None:
        await asyncio.sleep(0)
        log.append("a:" + m.delta)

    session.on("message", first)
    session.on("message", lambda m: log.append("b:" + m.delta))
    reply = await session.send("hello")
    pairs = list(zip(log[::2], log[1::2], strict=True))
    assert all(a[2:] == b[2:] and a[0] == "a" and b[0] == "b" for a, b in pairs)
    assert "".join(a[2:] for a, _ in pairs) == reply.text


async def test_once_and_off(make_session: SessionFactory) -> None:
    """once() fires for one message only; off() stops a handler."""
    session = make_session()
    once: list[Message] = []
    always: list[Message] = []
    session.once("message", once.append)
    session.on("message", always.append)
    await session.send("hello")
    assert len(once) == 1 and len(always) > 1
    session.off("message", always.append)
    before = len(always)
    await session.send("again")
    assert len(always) == before and len(once) == 1
    assert session.listeners("message") == []


async def test_on_rejects_unknown_event(make_session: SessionFactory) -> None:
    """A typo in the event name is caught at subscription time."""
    with pytest.raises(ValueError, match="messages"):
        make_session().on("messages", print)  # type: ignore[call-overload]


async def test_error_is_emitted_and_reply_keeps_partial_text(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """An in-stream error goes to 'error' handlers; send() returns the partial Reply."""
    sim.inject(Fault.stream_error(after=3, status=500, code="InternalError"))
    session = make_session()
    errors: list[tyqw.TyqwError] = []
    deltas: list[str] = []
    session.on("error", errors.append)
    session.on("message", lambda m: deltas.append(m.delta))
    reply = await session.send("hello there my friend")
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, tyqw.InternalServerError)
    assert error.status_code == 500 and error.code == "InternalError"
    assert error.request_id == sim.requests[-1].request_id  # the id the service sent
    assert reply.error is error
    assert len(deltas) == 3 and reply.text == "".join(deltas) and reply.text
    assert error.reply is not None and error.reply.text == reply.text


async def test_error_without_listener_raises(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """With nobody listening for 'error', send() raises it, partial reply attached."""
    sim.inject(Fault.stream_error(after=2, status=429, code="Throttling"))
    session = make_session()
    with pytest.raises(tyqw.RateLimitError) as info:
        await session.send("hello there my friend")
    assert info.value.status_code == 429
    assert info.value.reply is not None and info.value.reply.text


async def test_handler_exception_reaches_error_handlers(make_session: SessionFactory) -> None:
    """A raising message handler is reported as HandlerError; the stream goes on."""
    session = make_session()
    errors: list[tyqw.TyqwError] = []
    seen: list[Message] = []

    def boom(message: Message) -> None:
        if len(seen) == 1:
            raise KeyError("oops")

    session.on("message", boom)
    session.on("message", seen.append)
    session.on("error", errors.append)
    reply = await session.send("hello")
    assert len(errors) == 1 and isinstance(errors[0], tyqw.HandlerError)
    assert isinstance(errors[0].__cause__, KeyError)
    assert reply.error is None and reply.finish_reason == "stop"
    assert "".join(m.delta for m in seen) == reply.text


async def test_handler_exception_without_error_listener_raises(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Without an error listener, a handler's exception ends send() as HandlerError."""
    session = make_session()
    session.on("message", lambda m: 1 / 0)
    with pytest.raises(tyqw.HandlerError) as info:
        await session.send("hello")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    await asyncio.wait_for(sim.requests[-1].done.wait(), BOUND)
    # The Session is usable again right away.
    session.off("message", session.listeners("message")[0])
    assert (await session.send("again")).finish_reason == "stop"


async def test_sends_are_serialized(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """Two concurrent sends: the second waits and carries the first's session id."""
    session = make_session()
    first, second = await asyncio.gather(session.send("我叫小红"), session.send("我叫什么名字？"))
    assert sim.requests[1].body["input"]["session_id"] == first.session_id
    assert "小红" in second.text


async def test_sessions_run_concurrently(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Different Sessions overlap: both streams are open at the same time."""
    sim.delay = 0.01
    a = make_session(name="a")
    b = make_session(name="b")
    order: list[str] = []
    a.on("message", lambda m: order.append("a"))
    b.on("message", lambda m: order.append("b"))
    ra, rb = await asyncio.gather(a.send("hello there"), b.send("hello there"))
    assert ra.session_id != rb.session_id
    first_b = order.index("b")
    assert "a" in order[first_b:]  # interleaved, not one after the other


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"], ids=["empty", "spaces", "whitespace"])
async def test_empty_prompt_raises_before_any_request(
    make_session: SessionFactory, sim: BailianSimulator, prompt: str
) -> None:
    """Empty or whitespace prompts raise ValueError and nothing is sent."""
    session = make_session()
    with pytest.raises(ValueError, match="empty"):
        await session.send(prompt)
    with pytest.raises(ValueError, match="empty"):
        session.stream(prompt)
    assert sim.requests == []


async def test_non_string_prompt_raises_type_error(make_session: SessionFactory) -> None:
    """A prompt that is not a str is a TypeError."""
    with pytest.raises(TypeError, match="str"):
        await make_session().send(b"bytes")  # type: ignore[arg-type]


async def test_unknown_option_raises_type_error(make_session: SessionFactory) -> None:
    """Misspelled options fail loudly instead of being dropped."""
    with pytest.raises(TypeError, match="has_thought"):
        await make_session().send("hi", has_thought=True)  # type: ignore[call-arg]


async def test_options_go_where_the_protocol_says(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """input options, parameters options and extra dicts land in the right place."""
    session = make_session()
    await session.send(
        "hi",
        has_thoughts=True,
        biz_params={"user_prompt_params": {"city": "杭州"}},
        memory_id="mem-1",
        image_list=["https://example.com/a.png"],
        file_list=["https://example.com/a.pdf"],
        rag_options={"pipeline_ids": ["p1"]},
        flow_stream_mode="agent_format",
        enable_thinking=False,
        temperature=0.5,
        top_p=0.8,
        top_k=50,
        seed=7,
        input={"doc_reference_type": "simple"},
        parameters={"enable_web_search": True},
    )
    body = sim.requests[-1].body
    assert body["input"] == {
        "prompt": "hi",
        "biz_params": {"user_prompt_params": {"city": "杭州"}},
        "memory_id": "mem-1",
        "image_list": ["https://example.com/a.png"],
        "file_list": ["https://example.com/a.pdf"],
        "doc_reference_type": "simple",
    }
    assert body["parameters"] == {
        "incremental_output": True,
        "has_thoughts": True,
        "rag_options": {"pipeline_ids": ["p1"]},
        "flow_stream_mode": "agent_format",
        "enable_thinking": False,
        "temperature": 0.5,
        "top_p": 0.8,
        "top_k": 50,
        "seed": 7,
        "enable_web_search": True,
    }


async def test_request_headers(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """Bearer key, SSE switch, JSON content type and the workspace header are sent."""
    session = make_session(workspace="ws-1")
    await session.send("hi")
    headers = sim.requests[-1].headers
    assert headers["authorization"] == f"Bearer {sim.api_key}"
    assert headers["x-dashscope-sse"] == "enable"
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"].startswith("application/json")
    assert headers["x-dashscope-workspace"] == "ws-1"
    assert headers["user-agent"].startswith("tyqw/")


async def test_thoughts_and_doc_references(make_session: SessionFactory) -> None:
    """has_thoughts and RAG answers surface on messages and on the Reply."""
    session = make_session()
    messages: list[Message] = []
    session.on("message", messages.append)
    reply = await session.send(
        "hello there", has_thoughts=True, rag_options={"pipeline_ids": ["p"]}
    )
    assert reply.thoughts and any(m.thoughts for m in messages)
    assert reply.doc_references and messages[-1].doc_references == reply.doc_references


async def test_workflow_messages(make_session: SessionFactory) -> None:
    """flow_stream_mode=message_format events expose workflow_message."""
    session = make_session()
    messages = [m async for m in session.stream("hello", flow_stream_mode="message_format")]
    nodes = [m.workflow_message for m in messages if m.workflow_message]
    assert nodes and all("node_id" in node for node in nodes)
    assert messages[-1].finish_reason == "stop"


async def test_non_streaming_mode(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """stream=False: no SSE header, one JSON answer, one message event."""
    session = make_session()
    seen: list[Message] = []
    session.on("message", seen.append)
    reply = await session.send("hello", stream=False)
    assert "x-dashscope-sse" not in sim.requests[-1].headers
    assert len(seen) == 1
    assert seen[0].text == seen[0].delta == reply.text and reply.text
    assert reply.finish_reason == "stop" and reply.session_id


async def test_stream_iterates_and_exposes_reply(make_session: SessionFactory) -> None:
    """stream() yields Messages; its reply property summarises the turn."""
    session = make_session()
    async with session.stream("hello") as stream:
        messages = [m async for m in stream]
    assert messages[-1].finish_reason == "stop"
    assert stream.reply.text == messages[-1].text
    assert stream.reply.session_id == session.session_id


async def test_breaking_out_of_stream_closes_response(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Leaving the loop early closes the HTTP response at once; the Session goes on."""
    sim.delay = 0.05
    session = make_session()
    async for _ in session.stream("hello there, tell me a long story"):
        break
    request = sim.requests[-1]
    await asyncio.wait_for(request.done.wait(), 1.0)
    assert request.disconnected
    sim.delay = 0.0
    assert (await session.send("again")).finish_reason == "stop"


async def test_stream_raises_instead_of_emitting(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """stream() raises errors even when error handlers exist; they are not called."""
    sim.inject(Fault.stream_error(after=1, status=400, code="DataInspectionFailed"))
    session = make_session()
    errors: list[Any] = []
    session.on("error", errors.append)
    received: list[Message] = []

    async def consume() -> None:
        async for message in session.stream("hello there"):
            received.append(message)

    with pytest.raises(tyqw.BadRequestError) as info:
        await consume()
    assert errors == [] and len(received) == 1
    assert info.value.reply is not None and info.value.reply.text == received[0].text


# -- conversations --------------------------------------------------------------


async def test_conversation_survives_a_restart(sim: BailianSimulator, state_dir: Path) -> None:
    """A new Session with the same app and name continues the stored conversation."""
    async with sim_session(sim, state_dir) as s:
        first = await s.send("my name is Ada")
    async with sim_session(sim, state_dir) as s:
        assert s.session_id == first.session_id
        second = await s.send("what's my name?")
    assert second.session_id == first.session_id and "Ada" in second.text


async def test_names_keep_separate_conversations(make_session: SessionFactory) -> None:
    """Each name stores its own conversation id."""
    alice = make_session(name="alice")
    bob = make_session(name="bob")
    ra = await alice.send("hi")
    rb = await bob.send("hi")
    assert ra.session_id != rb.session_id
    assert alice.store_path != bob.store_path


async def test_clear_starts_a_new_conversation(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """clear() forgets the id and deletes its file; the next send starts anew."""
    session = make_session()
    first = await session.send("my name is Ada")
    assert stored_file(session).exists()
    session.clear()
    assert session.session_id is None and not stored_file(session).exists()
    second = await session.send("what's my name?")
    assert "session_id" not in sim.requests[-1].body["input"]
    assert second.session_id != first.session_id and "Ada" not in second.text


async def test_clear_inside_a_turn_is_not_undone(make_session: SessionFactory) -> None:
    """clear() from a handler wins over the ids still arriving in that turn."""
    session = make_session()
    session.once("message", lambda m: session.clear())
    await session.send("hello")
    assert session.session_id is None and not stored_file(session).exists()


async def test_session_id_setter_writes_before_returning(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Assigning session_id stores it on disk at once and the next turn uses it."""
    session = make_session()
    session.session_id = "c0ffee" * 5 + "00"
    assert json.loads(stored_file(session).read_text())["session_id"] == "c0ffee" * 5 + "00"
    await session.send("hi")
    assert sim.requests[-1].body["input"]["session_id"] == "c0ffee" * 5 + "00"


async def test_store_file_permissions(make_session: SessionFactory, state_dir: Path) -> None:
    """The id file is 0600 and the folder 0700; the key is not in it."""
    session = make_session()
    await session.send("hi")
    assert stat.S_IMODE(os.stat(stored_file(session)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert "sk-" not in stored_file(session).read_text()


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"session_id": 5}', b"\xff\xfe", b'{"app_id":"x","name":"y"}'],
    ids=["empty", "truncated", "list", "wrong-type", "binary", "no-id"],
)
async def test_corrupt_store_file_means_no_conversation(
    make_session: SessionFactory, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """A damaged id file is ignored with a warning, never a crash."""
    session = make_session()
    await session.send("hi")
    path = stored_file(session)
    await session.aclose()
    path.write_bytes(content)
    with caplog.at_level("WARNING", logger="tyqw"):
        fresh = make_session()
    assert fresh.session_id is None
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert (await fresh.send("hi")).session_id


async def test_stored_conversations_lists_and_deletes(
    make_session: SessionFactory, state_dir: Path
) -> None:
    """stored_conversations() lists what is on disk; delete() forgets one."""
    a = make_session(name="alice")
    b = make_session(name="bob")
    await a.send("hi")
    await b.send("hi")
    listed = {c.name: c for c in tyqw.stored_conversations(state_dir)}
    assert set(listed) == {"alice", "bob"}
    assert listed["alice"].session_id == a.session_id
    listed["alice"].delete()
    assert [c.name for c in tyqw.stored_conversations(state_dir)] == ["bob"]


# -- configuration and lifetime ------------------------------------------------------


def test_construction_needs_no_event_loop(tmp_path: Path) -> None:
    """A Session can be built outside any event loop, without network I/O."""
    session = Session("app", api_key="sk-x", state_dir=tmp_path)
    assert session.session_id is None
    assert session.base_url == "https://dashscope.aliyuncs.com/api/v1"


def test_missing_key_names_the_env_var(tmp_path: Path) -> None:
    """No key anywhere: MissingAPIKeyError naming DASHSCOPE_API_KEY."""
    with pytest.raises(tyqw.MissingAPIKeyError, match="DASHSCOPE_API_KEY"):
        Session("app", state_dir=tmp_path)


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Key, base URL (both names, in order) and workspace come from the environment."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-env")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://second.example/api/v1/")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-9")
    session = Session("app", state_dir=tmp_path)
    assert session.base_url == "https://second.example/api/v1"
    assert session.workspace == "ws-9"
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://first.example/api/v1")
    assert Session("app", state_dir=tmp_path).base_url == "https://first.example/api/v1"
    assert Session("app", base_url="https://arg.example/x", state_dir=tmp_path).base_url == (
        "https://arg.example/x"
    )
    assert Session("app", workspace="", state_dir=tmp_path).workspace is None


async def test_trailing_slash_on_base_url(sim: BailianSimulator, state_dir: Path) -> None:
    """A base URL ending in '/' still reaches {base}/apps/{app_id}/completion."""
    async with sim_session(sim, state_dir, base_url=sim.base_url + "/") as session:
        await session.send("hi")
    assert sim.requests[-1].path == f"/api/v1/apps/{sim.app_id}/completion"


async def test_caller_owned_http_session_is_not_closed(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """tyqw uses but never closes an aiohttp.ClientSession it was given."""
    async with aiohttp.ClientSession() as http:
        async with sim_session(sim, state_dir, http_session=http) as session:
            await session.send("hi")
        assert not http.closed


async def test_one_connection_reused_across_turns(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """The Session's own ClientSession keeps the connection alive between turns."""
    session = make_session()
    for _ in range(3):
        await session.send("hi")
    assert sim.connections == 1


async def test_aclose_is_idempotent_and_use_after_close_fails(
    make_session: SessionFactory,
) -> None:
    """aclose() twice is fine; sending afterwards raises SessionClosedError."""
    session = make_session()
    await session.send("hi")
    await session.aclose()
    await session.aclose()
    with pytest.raises(tyqw.SessionClosedError):
        await session.send("hi")
    with pytest.raises(tyqw.SessionClosedError):
        session.stream("hi")


async def test_reentrant_send_from_handler_is_refused(make_session: SessionFactory) -> None:
    """send() from inside a handler of the same Session fails fast instead of hanging."""
    session = make_session()
    failures: list[BaseException] = []

    async def handler(message: Message) -> None:
        try:
            await session.send("nested")
        except RuntimeError as exc:
            failures.append(exc)

    session.once("message", handler)
    await asyncio.wait_for(session.send("hi"), BOUND)
    assert len(failures) == 1


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    """repr() names the app and conversation, never the key."""
    session = Session("app", api_key="sk-very-secret", state_dir=tmp_path)
    assert "sk-very-secret" not in repr(session)
    assert "app" in repr(session)


async def test_stream_left_early_in_a_variable_must_be_closed(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A held stream left early blocks the next turn in its task with a clear error,
    until it is closed; closing it frees the Session at once."""
    sim.delay = 0.01
    session = make_session()
    stream = session.stream("hello there, a long story please")
    async for _ in stream:
        break
    with pytest.raises(RuntimeError, match="aclose"):
        await session.send("again")
    await stream.aclose()
    await asyncio.wait_for(sim.requests[-1].done.wait(), 1.0)
    assert sim.requests[-1].disconnected
    assert (await session.send("again")).finish_reason == "stop"


async def test_redirects_are_not_followed(raw_server: Any, state_dir: Path) -> None:
    """A redirect never re-sends the prompt elsewhere; it is reported instead."""
    target = await raw_server([b"should never be asked"])
    server = await raw_server(
        [b""], status=307, content_type="text/plain", headers={"location": target.base_url}
    )
    async with raw_session(server.base_url, state_dir) as s:
        with pytest.raises(tyqw.UnexpectedContentTypeError, match="307"):
            await s.send("hi")
    assert target.requests == []


@pytest.mark.parametrize(
    "url",
    ["https://example.com/api/v1?x=1", "https://example.com/api/v1#top", "https://h/api/v1?"],
    ids=["query", "fragment", "empty-query"],
)
def test_base_url_with_query_or_fragment_is_refused(tmp_path: Path, url: str) -> None:
    """The completion path is appended to base_url, so a query or fragment is an error."""
    with pytest.raises(ValueError, match="query or fragment"):
        Session("app", api_key="sk-x", base_url=url, state_dir=tmp_path)


async def test_json_answer_obeys_max_event_size(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A non-streaming answer is one event: larger than max_event_size, it is refused."""
    sim.reply = lambda prompt, history: "长" * 4000
    session = make_session(max_event_size=4096)
    with pytest.raises(tyqw.EventTooLargeError) as info:
        await session.send("hi", stream=False)
    assert info.value.limit == 4096


async def test_tls_failure_is_not_retried(state_dir: Path) -> None:
    """A TLS handshake that fails fails again: no retries, one APIConnectionError."""
    accepted = 0

    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")  # not TLS
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Session(
            "app", api_key="sk-x", base_url=f"https://127.0.0.1:{port}/api/v1", state_dir=state_dir
        ) as session:
            with pytest.raises(tyqw.APIConnectionError) as info:
                await session.send("hi")
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(info.value.__cause__, aiohttp.ClientSSLError)
    assert accepted == 1
