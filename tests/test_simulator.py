"""tyqw.testing.BailianSimulator over real sockets, read with plain aiohttp."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tyqw.testing import BailianSimulator, Fault, SimRequest, default_reply

SSE_TYPE = "text/event-stream;charset=UTF-8"
INTERNAL_ERROR = (
    "An internal error has occured, please try again later or contact service support."
)
BAD_APP = "Required parameter(AppId) missing or invalid, please check the request parameters."


@pytest.fixture
async def sim() -> AsyncIterator[BailianSimulator]:
    async with BailianSimulator() as simulator:
        yield simulator


class Reply:
    """What came back from one request."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str], raw: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def events(self) -> list[dict[str, str]]:
        """The raw events: field name -> value, the comment line under ``comment``."""
        events = []
        for block in self.raw.decode().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    fields["comment"] = line[1:]
                elif line:
                    name, _, value = line.partition(":")
                    fields[name] = value
            if fields:
                events.append(fields)
        return events

    @property
    def data(self) -> list[Any]:
        """The decoded JSON of every result event."""
        return [json.loads(e["data"]) for e in self.events if e.get("event") == "result"]

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def session_id(self) -> str:
        body = self.data[-1] if self.data else self.json
        return str(body["output"]["session_id"])

    @property
    def text(self) -> str:
        """The whole answer, whichever text mode was used."""
        body = self.data[-1] if self.data else self.json
        return str(body["output"]["text"]) or "".join(d["output"]["text"] for d in self.data)


def auth(sim: BailianSimulator, sse: bool = True) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    if sse:
        headers["X-DashScope-SSE"] = "enable"
    return headers


async def post(
    http: aiohttp.ClientSession,
    sim: BailianSimulator,
    prompt: str | None = "hi",
    *,
    sse: bool = True,
    session_id: str | None = None,
    parameters: dict[str, Any] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    url: str | None = None,
) -> Reply:
    if body is None:
        inp: dict[str, Any] = {} if prompt is None else {"prompt": prompt}
        if session_id is not None:
            inp["session_id"] = session_id
        body = {"input": inp, "parameters": parameters or {}}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        url or sim.url_for(), data=data, headers=headers if headers is not None else auth(sim, sse)
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def collect(resp: aiohttp.ClientResponse, into: bytearray) -> int:
    """Read the body into `into` chunk by chunk; return the number of chunks."""
    chunks = 0
    async for chunk in resp.content.iter_any():
        into += chunk
        chunks += 1
    return chunks


async def finished(sim: BailianSimulator, index: int = -1) -> SimRequest:
    rec = sim.requests[index]
    await asyncio.wait_for(rec.done.wait(), 1)
    return rec


# --------------------------------------------------------------------------- framing


async def test_first_and_final_event_bytes(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The first and the final events match the captured framing byte for byte."""
    sim.reply = lambda prompt, history: "Hello"
    reply = await post(http, sim, "hi")
    sid, rid = reply.session_id, reply.headers["x-request-id"]
    usage = '"usage":{"models":[{"input_tokens":2,"output_tokens":%d,"model_id":"qwen-plus"}]}'
    first = (
        "id:1\nevent:result\n:HTTP_STATUS/200\n"
        f'data:{{"output":{{"session_id":"{sid}","finish_reason":"null","text":"Hell"}},'
        f'{usage % 4},"request_id":"{rid}"}}\n\n'
    )
    final = (
        "id:3\nevent:result\n:HTTP_STATUS/200\n"
        f'data:{{"output":{{"session_id":"{sid}","finish_reason":"stop","text":"Hello"}},'
        f'{usage % 5},"request_id":"{rid}"}}\n\n'
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == SSE_TYPE
    assert reply.headers["x-dashscope-finished"] == "false"
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert reply.raw.decode().startswith(first)
    assert reply.raw.decode().endswith(final)
    assert b"\r" not in reply.raw
    assert b"[DONE]" not in reply.raw


async def test_non_ascii_is_sent_raw_on_one_line(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Chinese text goes out as UTF-8, not \\u escapes, and every data line is one line."""
    sim.reply = lambda prompt, history: "第一行\n第二行"
    reply = await post(http, sim, "你好")
    assert "第一行".encode() in reply.raw
    assert "\\u" not in reply.raw.decode()
    assert all(
        line.startswith(("id:", "event:", ":", "data:"))
        for line in reply.raw.decode().split("\n")
        if line
    )
    assert reply.data[-1]["output"]["text"] == "第一行\n第二行"


@pytest.mark.parametrize(
    ("incremental", "texts"),
    [
        (False, ["abcd", "abcdefgh", "abcdefghij", "abcdefghij"]),
        (True, ["abcd", "efgh", "ij", ""]),
    ],
    ids=["cumulative", "incremental"],
)
async def test_text_modes(
    sim: BailianSimulator, http: aiohttp.ClientSession, incremental: bool, texts: list[str]
) -> None:
    """Cumulative text repeats everything so far; incremental sends pieces and a blank stop."""
    sim.reply = lambda prompt, history: "abcdefghij"
    params = {"incremental_output": True} if incremental else {}
    reply = await post(http, sim, parameters=params)
    assert [d["output"]["text"] for d in reply.data] == texts
    assert [e["id"] for e in reply.events] == ["1", "2", "3", "4"]
    assert [d["usage"]["models"][0]["output_tokens"] for d in reply.data] == [4, 8, 10, 10]


async def test_finish_reason_is_the_string_null_then_stop(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """finish_reason is the string "null" on every event but the last, which is "stop"."""
    reply = await post(http, sim)
    reasons = [d["output"]["finish_reason"] for d in reply.data]
    assert reasons[:-1] == ["null"] * (len(reasons) - 1)
    assert reasons[-1] == "stop"
    assert len(reasons) > 2


async def test_request_id_matches_header_events_and_record(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """One uuid request id is in the header, every event and the recorded request."""
    reply = await post(http, sim)
    rid = reply.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", rid)
    assert {d["request_id"] for d in reply.data} == {rid}
    assert sim.requests[-1].request_id == rid
    assert "total_tokens" not in reply.raw.decode()


@pytest.mark.parametrize("value", ["enable", "ENABLE", " Enable "])
async def test_sse_switch_is_the_header(
    sim: BailianSimulator, http: aiohttp.ClientSession, value: str
) -> None:
    """X-DashScope-SSE: enable, in any case, switches the answer to SSE."""
    headers = {**auth(sim, sse=False), "X-DashScope-SSE": value}
    reply = await post(http, sim, headers=headers)
    assert reply.headers["Content-Type"] == SSE_TYPE
    assert reply.data[-1]["output"]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "accept",
    ["text/event-stream", "Text/Event-Stream", "application/json, text/event-stream;q=0.5"],
)
async def test_accept_event_stream_alone_switches_to_sse(
    sim: BailianSimulator, http: aiohttp.ClientSession, accept: str
) -> None:
    """Accept naming text/event-stream, in any case, selects SSE without X-DashScope-SSE."""
    headers = {**auth(sim, sse=False), "Accept": accept}
    reply = await post(http, sim, headers=headers)
    assert reply.headers["Content-Type"] == SSE_TYPE
    assert reply.data[-1]["output"]["finish_reason"] == "stop"
    assert sim.requests[-1].sse is True


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/*", "text/event-streams"])
async def test_other_accept_values_get_json(
    sim: BailianSimulator, http: aiohttp.ClientSession, accept: str
) -> None:
    """Without X-DashScope-SSE, an Accept not naming text/event-stream gets one JSON body."""
    headers = {**auth(sim, sse=False), "Accept": accept}
    reply = await post(http, sim, headers=headers)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json["output"]["finish_reason"] == "stop"
    assert sim.requests[-1].sse is False


async def test_non_stream_json_body(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Without SSE the whole answer comes as one JSON body with finish_reason "stop"."""
    reply = await post(http, sim, "hello", sse=False)
    body = reply.json
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["x-dashscope-finished"] == "true"
    assert body["request_id"] == reply.headers["x-request-id"]
    assert body["output"]["finish_reason"] == "stop"
    assert body["output"]["text"] == default_reply("hello", [])
    assert re.fullmatch(r"[0-9a-f]{32}", body["output"]["session_id"])
    models = body["usage"]["models"]
    assert models == [
        {"model_id": "qwen-plus", "input_tokens": 5, "output_tokens": len(body["output"]["text"])}
    ]
    assert set(body) == {"output", "usage", "request_id"}


async def test_any_path_prefix_is_routed(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The completion path is found under any base prefix."""
    url = sim.base_url.replace("/api/v1", "/gateway/x/api/v1") + f"/apps/{sim.app_id}/completion"
    reply = await post(http, sim, url=url)
    assert reply.status == 200
    assert sim.requests[-1].app_id == sim.app_id


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    ("intro", "question", "name"),
    [("我叫小明", "我叫什么名字？", "小明"), ("my name is Ada", "what's my name?", "Ada")],
    ids=["zh", "en"],
)
async def test_session_is_minted_then_remembered(
    sim: BailianSimulator, http: aiohttp.ClientSession, intro: str, question: str, name: str
) -> None:
    """A new session id is minted, returned on every event, and keeps the history."""
    first = await post(http, sim, intro)
    sid = first.session_id
    assert re.fullmatch(r"[0-9a-f]{32}", sid)
    assert {d["output"]["session_id"] for d in first.data} == {sid}
    second = await post(http, sim, question, session_id=sid)
    assert second.session_id == sid
    assert name in second.text
    assert sim.history(sid) == [(intro, first.text), (question, second.text)]
    fresh = await post(http, sim, question)
    assert fresh.session_id != sid
    assert name not in fresh.text


async def test_default_reply_mentions_turn_and_previous_prompt(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The built-in bot numbers the turns and quotes the previous prompt."""
    first = await post(http, sim, "今天天气不错")
    second = await post(http, sim, "我们去散步吧", session_id=first.session_id)
    assert first.text.startswith("第1轮：你说「今天天气不错」。")
    assert second.text == "第2轮：你说「我们去散步吧」。上一句你说的是「今天天气不错」。"


@pytest.mark.parametrize("given", ["0" * 32, "not-a-session"])
async def test_unknown_session_id_starts_a_new_conversation(
    sim: BailianSimulator, http: aiohttp.ClientSession, given: str
) -> None:
    """An unknown session id gets a freshly minted id and an empty history."""
    reply = await post(http, sim, "hello", session_id=given)
    assert reply.status == 200
    assert reply.session_id != given
    assert sim.history(reply.session_id) == [("hello", reply.text)]


async def test_expired_sessions_are_replaced(http: aiohttp.ClientSession) -> None:
    """Sessions end after max_rounds turns or when expired, and a new id follows."""
    async with BailianSimulator(max_rounds=2) as sim:
        sid = (await post(http, sim, "one")).session_id
        assert (await post(http, sim, "two", session_id=sid)).session_id == sid
        third = await post(http, sim, "three", session_id=sid)
        assert third.session_id != sid
        assert third.text.startswith('Turn 1: you said "three".')
        sim.expire_sessions(third.session_id)
        assert (await post(http, sim, "four", session_id=third.session_id)).session_id != sid
        assert sim.history(third.session_id) is None


async def test_session_ttl_expires_idle_sessions(http: aiohttp.ClientSession) -> None:
    """A session idle for longer than session_ttl is gone."""
    async with BailianSimulator(session_ttl=0.0) as sim:
        sid = (await post(http, sim, "one")).session_id
        assert (await post(http, sim, "two", session_id=sid)).session_id != sid


async def test_messages_override_session_context(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Given messages, they are the context; the session is echoed but not used or written."""
    sid = (await post(http, sim, "我叫小明")).session_id
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "我叫小红"},
        {"role": "assistant", "content": "好的"},
    ]
    body = {"input": {"messages": messages, "prompt": "我叫什么名字", "session_id": sid}}
    reply = await post(http, sim, body=body)
    assert "小红" in reply.text
    assert "小明" not in reply.text
    assert reply.session_id == sid
    assert len(sim.history(sid) or []) == 1
    only_messages = {"input": {"messages": [*messages, {"role": "user", "content": "我叫什么"}]}}
    other = await post(http, sim, body=only_messages, sse=False)
    assert "小红" in other.text
    assert other.session_id != sid


async def test_messages_without_a_user_turn_are_rejected(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """messages with no user role are a 400 InvalidParameter."""
    body = {"input": {"messages": [{"role": "system", "content": "hi"}]}}
    reply = await post(http, sim, body=body, sse=False)
    assert reply.status == 400
    assert reply.json["code"] == "InvalidParameter"
    assert (
        reply.json["message"]
        == "The input messages do not contain elements with the role of user."
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer sk-wrong", "Bearer ", "Basic sk-simulator"]
)
async def test_bad_api_key_is_http_401(
    sim: BailianSimulator, http: aiohttp.ClientSession, sse: bool, authorization: str | None
) -> None:
    """A missing or wrong key is HTTP 401 InvalidApiKey JSON, streaming or not."""
    headers = {"X-DashScope-SSE": "enable"} if sse else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    reply = await post(http, sim, headers=headers)
    assert reply.status == 401
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json == {
        "code": "InvalidApiKey",
        "message": "Invalid API-key provided.",
        "request_id": reply.headers["x-request-id"],
    }


async def test_api_key_none_accepts_any_key(http: aiohttp.ClientSession) -> None:
    """With api_key=None any non-empty Bearer key is accepted."""
    async with BailianSimulator(api_key=None) as sim:
        ok = await post(http, sim, headers={"Authorization": "Bearer sk-anything"})
        missing = await post(http, sim, headers={})
    assert ok.status == 200
    assert missing.status == 401


async def test_unknown_app_id_on_stream_is_a_200_error_frame(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A bad app id on a stream is HTTP 200 and one error frame with no closing blank line."""
    reply = await post(http, sim, url=sim.url_for("no.such.app"))
    rid = reply.headers["x-request-id"]
    expected = (
        "id:1\nevent:error\n:HTTP_STATUS/400\n"
        f'data:{{"code":"InvalidParameter","message":"{BAD_APP}","request_id":"{rid}"}}\n'
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == SSE_TYPE
    assert reply.headers["x-dashscope-finished"] == "true"
    assert reply.raw.decode() == expected


async def test_unknown_app_id_without_stream_is_http_400(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A bad app id on a non-streaming call is HTTP 400 JSON."""
    reply = await post(http, sim, sse=False, url=sim.url_for("x" * 65))
    assert reply.status == 400
    assert reply.json["code"] == "InvalidParameter"
    assert reply.json["message"] == BAD_APP


async def test_sse_errors_http_mode(http: aiohttp.ClientSession) -> None:
    """With sse_errors="http" a rejected streaming request gets plain HTTP 400 JSON."""
    async with BailianSimulator(sse_errors="http") as sim:
        reply = await post(http, sim, url=sim.url_for("bad.id"))
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json["message"] == BAD_APP


async def test_app_ids_limit_the_accepted_apps(http: aiohttp.ClientSession) -> None:
    """Only the configured app ids are accepted, and app_id is the first of them."""
    async with BailianSimulator(app_ids=["app1", "app2"]) as sim:
        assert sim.app_id == "app1"
        assert (await post(http, sim, sse=False, url=sim.url_for("app2"))).status == 200
        assert (await post(http, sim, sse=False, url=sim.url_for("app3"))).status == 400


async def test_workspace_is_required_for_listed_apps(http: aiohttp.ClientSession) -> None:
    """An app bound to a workspace needs X-DashScope-WorkSpace, else Workspace.AccessDenied."""
    async with BailianSimulator(workspaces={"wsapp": "ws-1"}) as sim:
        url = sim.url_for("wsapp")
        missing = await post(http, sim, sse=False, url=url)
        wrong = await post(
            http, sim, url=url, headers={**auth(sim), "X-DashScope-WorkSpace": "ws-2"}
        )
        right = await post(
            http, sim, url=url, headers={**auth(sim), "X-DashScope-WorkSpace": "ws-1"}
        )
        other_app = await post(http, sim, sse=False)
    assert missing.status == 403
    assert missing.json["code"] == "Workspace.AccessDenied"
    assert missing.json["message"] == "Workspace access denied."
    assert wrong.status == 200
    assert wrong.events[0]["comment"] == "HTTP_STATUS/403"
    assert json.loads(wrong.events[0]["data"])["code"] == "Workspace.AccessDenied"
    assert right.data[-1]["output"]["finish_reason"] == "stop"
    assert other_app.status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Required body invalid, please check the request body format."),
        (b"", "Required body invalid, please check the request body format."),
        ([1, 2], "Required body invalid, please check the request body format."),
        ({"input": "hi"}, "Required body invalid, please check the request body format."),
        ({"input": {}}, "Required parameter(prompt or messages) missing or invalid"),
        ({"input": {"prompt": ""}}, "Required parameter(prompt or messages) missing or invalid"),
        ({"input": {"messages": []}}, "Required parameter(prompt or messages) missing or invalid"),
        ({"input": {"prompt": 5}}, "Input prompt must be a string."),
    ],
    ids=[
        "bad-json",
        "empty",
        "array",
        "input-str",
        "no-prompt",
        "empty-prompt",
        "no-messages",
        "int-prompt",
    ],
)
async def test_invalid_bodies_are_400(
    sim: BailianSimulator, http: aiohttp.ClientSession, body: Any, message: str
) -> None:
    """Malformed bodies and missing prompts are 400 InvalidParameter."""
    reply = await post(http, sim, body=body, sse=False)
    assert reply.status == 400
    assert reply.json["code"] == "InvalidParameter"
    assert reply.json["message"].startswith(message)


async def test_unknown_body_keys_are_ignored(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """model, debug, parameters.workspace: null and parameters.stream are accepted."""
    body = {
        "model": "",
        "input": {"prompt": "hi", "biz_params": {"user_defined_params": {}}},
        "parameters": {"workspace": None, "stream": True, "top_p": 0.8},
        "debug": {},
    }
    reply = await post(http, sim, body=body)
    assert reply.data[-1]["output"]["finish_reason"] == "stop"


async def test_other_methods_and_paths(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """GET is 400 "Request method 'GET' is not supported."; an unknown path is 404 NotFound."""
    async with http.get(sim.url_for(), headers=auth(sim)) as resp:
        get = resp.status, await resp.json()
    async with http.post(sim.base_url + "/services/x", headers=auth(sim), json={}) as resp:
        missing = resp.status, await resp.json()
    assert get[0] == 400
    assert get[1]["code"] == "InvalidParameter"
    assert get[1]["message"] == "Request method 'GET' is not supported."
    assert missing[0] == 404
    assert missing[1]["code"] == "NotFound"
    assert sim.requests[-1].app_id is None


async def test_failing_reply_function_is_internal_error(
    sim: BailianSimulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in reply() is logged and answered with 500 InternalError."""

    def broken(prompt: str, history: list[tuple[str, str]]) -> str:
        raise RuntimeError("boom")

    sim.reply = broken
    with caplog.at_level(logging.ERROR, logger="tyqw.simulator"):
        reply = await post(http, sim, sse=False)
    assert reply.status == 500
    assert reply.json["code"] == "InternalError"
    assert "boom" in caplog.text


# --------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    "options", [{"reasoning": True}, {"model_id": "deepseek-r1"}], ids=["flag", "model"]
)
async def test_reasoning_thought_on_every_event(
    http: aiohttp.ClientSession, options: dict[str, Any]
) -> None:
    """A reasoning app's has_thoughts answer has a reasoning thought on every event and body."""
    async with BailianSimulator(**options) as sim:
        reply = await post(http, sim, "你好", parameters={"has_thoughts": True})
        body = (await post(http, sim, sse=False, parameters={"has_thoughts": True})).json
        plain = await post(http, sim)
    for output in [*(d["output"] for d in reply.data), body["output"]]:
        (thought,) = output["thoughts"]
        assert list(thought) == ["thought", "action_type", "response", "action_name", "action"]
        assert thought["action_type"] == thought["action"] == "reasoning"
        assert thought["action_name"] == "思考过程"
        assert thought["thought"] == thought["response"]
    assert (
        reply.data[0]["output"]["thoughts"][0]["thought"]
        == "用户说「你好」。结合前面0轮对话来回答。"
    )
    assert "thoughts" not in plain.data[0]["output"]


async def test_no_reasoning_thought_unless_the_model_reasons(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """qwen-plus (the default) sends no reasoning thought; enable_thinking turns it on."""
    quiet = await post(http, sim, parameters={"has_thoughts": True})
    thinking = await post(http, sim, parameters={"has_thoughts": True, "enable_thinking": True})
    assert all("thoughts" not in d["output"] for d in quiet.data)
    assert thinking.data[-1]["output"]["thoughts"][0]["action_type"] == "reasoning"
    async with BailianSimulator(model_id="qwq-plus") as reasoner:
        off = await post(
            http, reasoner, parameters={"has_thoughts": True, "enable_thinking": False}
        )
    assert all("thoughts" not in d["output"] for d in off.data)


@pytest.mark.parametrize("mode", ["message_format", "message_format_plus"])
async def test_workflow_messages(
    sim: BailianSimulator, http: aiohttp.ClientSession, mode: str
) -> None:
    """flow_stream_mode message_format streams workflow_message pieces, then text + stop."""
    sim.reply = lambda prompt, history: "abcdefghij"
    reply = await post(http, sim, parameters={"flow_stream_mode": mode})
    *nodes, final = [d["output"] for d in reply.data]
    llm = [o["workflow_message"] for o in nodes if o["workflow_message"]["node_type"] == "LLM"]
    contents = [m["message"]["content"] for m in llm]
    if mode == "message_format_plus":  # each LLM node's content is a JSON string
        parsed = [json.loads(c) for c in contents]
        assert all(set(p) == {"result", "reasoningContent"} for p in parsed)
        contents = [p["result"] for p in parsed]
    assert "".join(contents) == "abcdefghij"
    assert [m["node_is_completed"] for m in llm] == [False, False, True]
    assert [m["node_msg_seq_id"] for m in llm] == [1, 2, 3]
    assert all(m["message"]["role"] == "assistant" for m in llm)
    assert len(nodes) == (4 if mode == "message_format_plus" else 3)
    assert all(o["finish_reason"] == "null" for o in nodes)
    assert "workflow_message" not in final
    assert final["text"] == "abcdefghij"
    assert final["finish_reason"] == "stop"


# --------------------------------------------------------------------------- faults


async def test_fault_http_with_retry_headers(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Fault.http answers with the status, a DashScope body and the retry headers, once."""
    sim.inject(Fault.http(429, retry_after=1.0, retry_after_ms=1500))
    throttled = await post(http, sim)
    normal = await post(http, sim)
    assert throttled.status == 429
    assert throttled.headers["Content-Type"] == "application/json"
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.headers["retry-after-ms"] == "1500"
    assert throttled.json == {
        "code": "Throttling",
        "message": "Requests throttling triggered.",
        "request_id": throttled.headers["x-request-id"],
    }
    assert normal.status == 200


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "InvalidParameter"),
        (401, "InvalidApiKey"),
        (403, "AccessDenied"),
        (404, "NotFound"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (504, "GatewayTimeout"),
    ],
)
async def test_fault_http_default_codes(
    sim: BailianSimulator, http: aiohttp.ClientSession, status: int, code: str
) -> None:
    """Each status gets its DashScope code by default."""
    sim.inject(Fault.http(status))
    reply = await post(http, sim, sse=False)
    assert (reply.status, reply.json["code"]) == (status, code)


async def test_faults_are_fifo_and_clearable(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Queued faults strike the next requests in order, one each; clear_faults drops them."""
    sim.inject(Fault.http(500), times=2)
    sim.inject(Fault.http(503))
    statuses = [(await post(http, sim, sse=False)).status for _ in range(4)]
    assert statuses == [500, 500, 503, 200]
    sim.inject(Fault.http(500), times=3)
    sim.clear_faults()
    assert (await post(http, sim, sse=False)).status == 200
    assert [r.fault.status if r.fault else None for r in sim.requests] == [
        500,
        500,
        503,
        None,
        None,
    ]


async def test_fault_stream_error(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.stream_error sends K result events, then an unterminated error frame."""
    sim.inject(Fault.stream_error(after=2))
    reply = await post(http, sim)
    rid = reply.headers["x-request-id"]
    tail = (
        "id:3\nevent:error\n:HTTP_STATUS/500\n"
        f'data:{{"code":"InternalError","message":"{INTERNAL_ERROR}","request_id":"{rid}"}}\n'
    )
    assert reply.status == 200
    assert [e["event"] for e in reply.events] == ["result", "result", "error"]
    assert reply.raw.decode().endswith("\n\n" + tail)
    assert all(d["output"]["finish_reason"] == "null" for d in reply.data)


async def test_fault_stream_error_on_json_request(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """On a non-streaming call Fault.stream_error is an HTTP error with that code."""
    sim.inject(Fault.stream_error(status=400, code="DataInspectionFailed", message="bad"))
    reply = await post(http, sim, sse=False)
    assert reply.status == 400
    assert reply.json["code"] == "DataInspectionFailed"


async def test_fault_cut(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.cut drops the connection mid-body: the client sees a payload error."""
    sim.inject(Fault.cut(after=2))
    received = bytearray()
    async with http.post(
        sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth(sim)
    ) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await collect(resp, received)
    assert received.count(b"event:result") == 2
    assert received.endswith(b"\n\n")
    rec = await finished(sim)
    assert rec.disconnected is False


async def test_fault_cut_on_json_request(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """On a non-streaming call Fault.cut closes the connection before any answer."""
    sim.inject(Fault.cut())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, sim, sse=False)


async def test_fault_truncate(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.truncate ends the body cleanly after K events, without a stop event."""
    sim.inject(Fault.truncate(after=2))
    reply = await post(http, sim)
    assert len(reply.data) == 2
    assert all(d["output"]["finish_reason"] == "null" for d in reply.data)
    rec = await finished(sim)
    assert rec.disconnected is False
    assert sim.history(reply.session_id) == []  # the unfinished turn is not remembered


async def test_fault_stall_trips_an_idle_timeout(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Fault.stall goes quiet; a short sock_read times out and the server notices at once."""
    sim.inject(Fault.stall(30, after=1))
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    received = bytearray()
    async with http.post(
        sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth(sim), timeout=timeout
    ) as resp:
        assert resp.status == 200
        with pytest.raises(asyncio.TimeoutError):
            await collect(resp, received)
    rec = await finished(sim)
    assert rec.disconnected is True
    assert received.count(b"event:result") == 1


async def test_fault_stall_sends_only_keepalives_while_quiet(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Fault.stall with keepalive sends ":" comments and nothing else while quiet."""
    sim.inject(Fault.stall(30, after=1, keepalive=0.01))
    async with http.post(
        sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth(sim)
    ) as resp:
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        quiet = [await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5) for _ in range(3)]
    assert first.startswith(b"id:1\nevent:result\n")
    assert quiet == [b":\n\n"] * 3
    assert (await finished(sim)).disconnected is True


async def test_fault_stall_with_keepalives_then_continues(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """After a stall with keepalives the stream finishes normally, its ids unbroken."""
    sim.inject(Fault.stall(0.05, after=1, keepalive=0.01))
    reply = await post(http, sim)
    blocks = reply.raw.split(b"\n\n")
    assert blocks[1] == b":"  # a stall longer than keepalive sends one comment at least
    assert reply.data[-1]["output"]["finish_reason"] == "stop"
    assert [e["id"] for e in reply.events if "id" in e] == [
        str(i) for i in range(1, len(reply.data) + 1)
    ]


async def test_fault_drip(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.drip delivers the same stream in many tiny pieces."""
    sim.reply = lambda prompt, history: "abcdefghij"
    sim.inject(Fault.drip(after=1))
    received = bytearray()
    async with http.post(
        sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth(sim)
    ) as resp:
        chunks = await collect(resp, received)
    reply = Reply(200, resp.headers, bytes(received))
    assert [d["output"]["text"] for d in reply.data] == [
        "abcd",
        "abcdefgh",
        "abcdefghij",
        "abcdefghij",
    ]
    assert chunks > 20


async def test_fault_malformed(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.malformed inserts one event with bad data, then the stream goes on."""
    sim.reply = lambda prompt, history: "abcdefgh"
    sim.inject(Fault.malformed(after=1))
    sim.inject(Fault.malformed(after=0, data='{"foo":1}'))
    bad = await post(http, sim)
    no_output = await post(http, sim)
    assert [e["id"] for e in bad.events] == ["1", "2", "3", "4"]
    assert bad.events[1]["data"] == "{not json"
    assert json.loads(bad.events[-1]["data"])["output"]["finish_reason"] == "stop"
    assert no_output.events[0]["data"] == '{"foo":1}'
    assert json.loads(no_output.events[-1]["data"])["output"]["text"] == "abcdefgh"


async def test_fault_content_type(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.content_type answers with a proxy's HTML page instead of the stream."""
    sim.inject(Fault.content_type())
    reply = await post(http, sim)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html"
    assert b"502 Bad Gateway" in reply.raw


async def test_fault_oversized(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Fault.oversized inserts one valid event whose data line is exactly `size` bytes."""
    sim.inject(Fault.oversized(100_000, after=1))
    reply = await post(http, sim)
    big = reply.events[1]["data"]
    assert len(big.encode()) == 100_000
    assert json.loads(big)["output"]["finish_reason"] == "null"
    assert reply.data[-1]["output"]["finish_reason"] == "stop"


async def test_fault_headers_stall_trips_a_timeout_before_headers(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Fault.headers_stall sends nothing; the client times out and the server notices."""
    sim.inject(Fault.headers_stall(30))
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            sim.url_for(),
            json={"input": {"prompt": "hi"}},
            headers=auth(sim),
            timeout=aiohttp.ClientTimeout(sock_read=0.2),
        )
    rec = await finished(sim)
    assert rec.disconnected is True


async def test_fault_headers_stall_then_answers(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """After a short headers_stall the request is answered normally."""
    sim.inject(Fault.headers_stall(0.05))
    reply = await post(http, sim)
    assert reply.data[-1]["output"]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fault.cut(after=-1),
        lambda: Fault.stall(-1),
        lambda: Fault.stall(1, keepalive=0),
        lambda: Fault.http(200),
        lambda: Fault.malformed(data="a\nb"),
        lambda: Fault.oversized(-1),
    ],
    ids=["after", "seconds", "keepalive", "status", "multiline", "size"],
)
def test_fault_arguments_are_checked(make: Any) -> None:
    """Fault constructors reject nonsense early."""
    with pytest.raises(ValueError, match=r"must|needs"):
        make()


# --------------------------------------------------------------------------- server


async def test_keep_alive_reuses_the_connection(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Two sequential streams on one ClientSession use one TCP connection."""
    await post(http, sim)
    await post(http, sim)
    await post(http, sim, sse=False)
    assert sim.connections == 1


async def test_requests_are_recorded(sim: BailianSimulator, http: aiohttp.ClientSession) -> None:
    """Each request is recorded with method, path, headers, body and the session used."""
    reply = await post(http, sim, "hi", parameters={"incremental_output": True})
    rec = await finished(sim)
    assert rec.method == "POST"
    assert rec.path == f"/api/v1/apps/{sim.app_id}/completion"
    assert rec.app_id == sim.app_id
    assert rec.headers["authorization"] == f"Bearer {sim.api_key}"
    assert rec.headers["x-dashscope-sse"] == "enable"
    assert rec.body == {"input": {"prompt": "hi"}, "parameters": {"incremental_output": True}}
    assert json.loads(rec.raw_body) == rec.body
    assert rec.sse is True
    assert rec.session_id == reply.session_id
    assert rec.disconnected is False
    assert rec.fault is None


async def test_lifecycle() -> None:
    """start() returns self, runs once, and aclose() is idempotent."""
    sim = BailianSimulator()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    assert await sim.start() is sim
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", sim.base_url)
    assert sim.port != 0
    with pytest.raises(RuntimeError):
        await sim.start()
    await sim.aclose()
    await sim.aclose()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    await asyncio.wait_for(sim.serve_forever(), 1)


async def test_aclose_cuts_streams_in_progress(http: aiohttp.ClientSession) -> None:
    """Closing the simulator ends a stalled stream at once."""
    sim = await BailianSimulator().start()
    sim.inject(Fault.stall(30, after=1))
    async with http.post(
        sim.url_for(), json={"input": {"prompt": "hi"}}, headers=auth(sim)
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        await asyncio.wait_for(sim.aclose(), 1)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert (await finished(sim)).disconnected is True


async def test_many_concurrent_conversations(http: aiohttp.ClientSession) -> None:
    """300 concurrent clients each hold their own 3-turn conversation."""
    async with (
        BailianSimulator(chunk_size=16) as sim,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as many,
    ):

        async def client(n: int) -> str:
            sid = None
            for turn in range(3):
                reply = await post(many, sim, f"client {n} turn {turn}", session_id=sid)
                sid = reply.session_id
            return reply.text

        texts = await asyncio.gather(*(client(n) for n in range(300)))
    assert texts == [
        f'Turn 3: you said "client {n} turn 2". Before that you said "client {n} turn 1".'
        for n in range(300)
    ]
    assert len(sim.requests) == 900


# --------------------------------------------------------------------------- default bot


@pytest.mark.parametrize(
    ("prompt", "history", "expected"),
    [
        ("你好", [], "你好！我是百炼应用的本地模拟器"),
        ("hello there", [], "Hello! I'm the local Bailian simulator"),
        ("hi", [("my name is Ada", "ok")], "Hello, Ada!"),
        ("我叫什么名字", [], "你还没告诉我你的名字呢"),
        ("who am I?", [], "You haven't told me your name yet"),
        ("你好，我叫小明。", [], "很高兴认识你，小明！"),
        ("call me Bob", [], "Nice to meet you, Bob!"),
        ("what is my name", [("我叫小明", "ok"), ("my name is Ada", "ok")], "Your name is Ada."),
        ("天气", [("a", "b")], "第2轮：你说「天气」。上一句你说的是「a」。"),
        ("weather", [], 'Turn 1: you said "weather". This is where we start.'),
    ],
)
def test_default_reply(prompt: str, history: list[tuple[str, str]], expected: str) -> None:
    """The built-in bot greets, remembers names and quotes the previous turn."""
    assert default_reply(prompt, history).startswith(expected)
    assert default_reply(prompt, history) == default_reply(prompt, list(history))
