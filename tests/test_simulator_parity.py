"""The simulator answers as the service does: its answers beside the transcripts.

The transcripts in ``tests/fixtures`` have the real service's shapes; here the
simulator answers the same requests and the two are compared field by field: the keys
of every object and their order, when ``doc_references`` first appear and how they grow,
the keys of each kind of thought, the error frames. Then the rest of what the service
does that a client can tell apart: which app ids exist, messages chosen by error code,
gzip-compressed JSON answers, memory thoughts.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw.testing import BailianSimulator, Fault

FIXTURES = Path(__file__).parent / "fixtures"
MARKER = re.compile(r"<ref>((?:\[\d+\])+)</ref>")
BAD_APP = "Required parameter(AppId) missing or invalid, please check the request parameters."


def events(raw: bytes) -> list[tuple[str, int, Any]]:
    """``(event type, :HTTP_STATUS, decoded data)`` of every event, read line by line."""
    found = []
    event, status = "result", 200
    for line in raw.decode().split("\n"):
        if line.startswith("event:"):
            event = line[6:]
        elif line.startswith(":HTTP_STATUS/"):
            status = int(line[13:])
        elif line.startswith("data:"):
            found.append((event, status, json.loads(line[5:])))
    return found


def fixture_events(name: str) -> list[Any]:
    return [data for _, _, data in events((FIXTURES / name).read_bytes())]


async def ask(
    http: aiohttp.ClientSession,
    sim: BailianSimulator,
    *,
    sse: bool = True,
    parameters: dict[str, Any] | None = None,
    app_id: str | None = None,
    **inp: Any,
) -> tuple[aiohttp.ClientResponse, bytes]:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    if sse:
        headers["X-DashScope-SSE"] = "enable"
    body = {"input": {"prompt": "hi", **inp}, "parameters": parameters or {}}
    async with http.post(sim.url_for(app_id), json=body, headers=headers) as resp:
        return resp, await resp.read()


async def simulated(
    http: aiohttp.ClientSession, sim: BailianSimulator, **kwargs: Any
) -> list[Any]:
    """The decoded data of every event of the simulator's stream."""
    _, raw = await ask(http, sim, **kwargs)
    return [data for _, _, data in events(raw)]


def shapes(payloads: list[Any]) -> set[tuple[Any, ...]]:
    """The distinct shapes of a stream's events: every key path, in order of appearance."""
    found = set()
    for payload in payloads:
        output = payload["output"]
        found.add(("top", *payload))
        found.add(("output", *output))
        for model in payload["usage"].get("models", ()):
            found.add(("usage.models[]", *model))
        for ref in output.get("doc_references", ()):
            found.add(("doc_references[]", *ref))
        for thought in output.get("thoughts", ()):
            found.add((f"thoughts[{thought['action_type']}]", *thought))
            if thought["action_type"] == "agentRag":
                for chunk in json.loads(thought["observation"]):
                    found.add(("observation[]", *chunk))
        if "workflow_message" in output:
            node = output["workflow_message"]
            found.add(("workflow_message", *node))
            found.add(("workflow_message.message", *node["message"]))
    return found


def citations(payloads: list[Any]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per event: the chunk numbers of the markers complete in the text so far, and the
    index ids its doc_references list."""
    text, seen = "", []
    for payload in payloads:
        output = payload["output"]
        text += output["text"]
        cited = sorted({int(n) for m in MARKER.finditer(text) for n in re.findall(r"\d+", m[1])})
        listed = tuple(r["index_id"] for r in output.get("doc_references", ()))
        seen.append((tuple(map(str, cited)), listed))
    return seen


def growth(payloads: list[Any]) -> list[tuple[str, ...]]:
    """The distinct doc_references lists in order of appearance."""
    lists: list[tuple[str, ...]] = []
    for payload in payloads:
        ids = tuple(r["index_id"] for r in payload["output"].get("doc_references", ()))
        if ids and (not lists or lists[-1] != ids):
            lists.append(ids)
    return lists


def fixture_text(payloads: list[Any]) -> str:
    return "".join(p["output"]["text"] for p in payloads)


# --------------------------------------------------------------------------- streams


async def test_rag_stream_has_the_captured_shape_and_citation_growth(
    http: aiohttp.ClientSession,
) -> None:
    """Asked for the RAG transcript's text, the simulator streams the same shapes and the
    same citations: doc_references appear with the first complete marker and grow."""
    recorded = fixture_events("rag-incremental.sse")
    text = fixture_text(recorded)
    async with BailianSimulator(reply=lambda prompt, history: text, chunk_size=5) as sim:
        ours = await simulated(
            http,
            sim,
            parameters={"incremental_output": True, "rag_options": {"pipeline_ids": ["kb1"]}},
        )
    assert shapes(ours) == shapes(recorded)
    for payloads in (recorded, ours):
        assert all(cited == listed for cited, listed in citations(payloads))
        assert growth(payloads) == [("4",), ("2", "4"), ("2", "3", "4"), ("2", "3", "4", "5")]
        final = payloads[-1]["output"]
        assert (final["finish_reason"], final["text"]) == ("stop", "")
        assert [r["index_id"] for r in final["doc_references"]] == ["2", "3", "4", "5"]
    assert fixture_text(ours) == text


async def test_default_rag_reply_cites_as_the_service_does(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """The built-in bot's RAG answers carry markers, and doc_references follow them."""
    ours = await simulated(
        http,
        sim,
        prompt="今天天气不错",
        parameters={"incremental_output": True, "rag_options": {"pipeline_ids": ["kb1"]}},
    )
    text = fixture_text(ours)
    assert (
        text == "第1轮：你说「今天天气不错」<ref>[4]</ref>。这是我们对话的第一句<ref>[2]</ref>。"
    )
    assert all(cited == listed for cited, listed in citations(ours))
    assert "doc_references" not in ours[0]["output"]
    assert growth(ours) == [("4",), ("2", "4")]
    docs = ours[-1]["output"]["doc_references"]
    assert {d["doc_id"] for d in docs} == {docs[0]["doc_id"]}  # one knowledge-base file


async def test_thoughts_have_the_captured_shape(http: aiohttp.ClientSession) -> None:
    """A reasoning RAG agent's thoughts: the retrieval and reasoning thoughts' keys and the
    retrieved chunks' keys are those of the transcript, on every event."""
    recorded = fixture_events("agent-thoughts-incremental.sse")
    async with BailianSimulator(model_id="deepseek-r1") as sim:
        ours = await simulated(
            http,
            sim,
            parameters={
                "incremental_output": True,
                "has_thoughts": True,
                "rag_options": {"pipeline_ids": ["kb1"]},
            },
        )
    assert shapes(ours) == shapes(recorded)
    for payloads in (recorded, ours):
        kinds = [[t["action_type"] for t in p["output"]["thoughts"]] for p in payloads]
        assert kinds == [["agentRag", "reasoning"]] * len(payloads)
        rag = payloads[0]["output"]["thoughts"][0]
        assert (rag["arguments"], rag["action_input_stream"]) == ("{}", "{}")


async def test_cumulative_stream_has_the_captured_shape(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Without incremental_output every event's text is all so far; the last repeats it."""
    recorded = fixture_events("agent-cumulative.sse")
    ours = await simulated(http, sim)
    assert shapes(ours) == shapes(recorded)
    for payloads in (recorded, ours):
        texts = [p["output"]["text"] for p in payloads]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
        assert texts[-1] == texts[-2]
        assert payloads[-1]["output"]["finish_reason"] == "stop"


async def test_workflow_stream_has_the_captured_shape(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """message_format: node events with empty usage, then the text; shapes as recorded."""
    recorded = fixture_events("workflow-message-format.sse")
    ours = await simulated(http, sim, parameters={"flow_stream_mode": "message_format"})
    assert shapes(ours) == shapes(recorded)
    for payloads in (recorded, ours):
        *nodes, final = payloads
        assert all(p["usage"] == {} for p in nodes)
        assert "workflow_message" not in final["output"] and final["usage"]["models"]


def strip_ids(raw: bytes) -> bytes:
    """The bytes with request and session ids blanked, to compare framing byte for byte."""
    raw = re.sub(rb'"request_id":"[^"]*"', b'"request_id":"-"', raw)
    return re.sub(rb'"session_id":"[^"]*"', b'"session_id":"-"', raw)


async def test_bad_app_id_answer_is_the_transcript_byte_for_byte(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An unknown app id on a stream: HTTP 200 and exactly the transcript's error frame."""
    resp, raw = await ask(http, sim, app_id="0123456789abcdef0123456789abcdef")
    assert (resp.status, resp.headers["x-dashscope-finished"]) == (200, "true")
    assert strip_ids(raw) == strip_ids((FIXTURES / "bad-app-id.sse").read_bytes())


async def test_error_after_partial_output_frame_is_the_transcripts(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Fault.stream_error(after=3, 400, DataInspectionFailed) ends as the transcript does,
    with the code's own message."""
    sim.inject(Fault.stream_error(after=3, status=400, code="DataInspectionFailed"))
    _, raw = await ask(http, sim)
    recorded = (FIXTURES / "error-after-partial.sse").read_bytes()
    tail = recorded[recorded.rindex(b"id:4\n") :]
    assert strip_ids(raw).endswith(b"\n\n" + strip_ids(tail))
    assert [(e, s) for e, s, _ in events(raw)] == [(e, s) for e, s, _ in events(recorded)]


# --------------------------------------------------------------------------- JSON answers


async def test_memory_thought_has_the_captured_shape(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """With memory_id, a memory thought shaped as recorded, recalling the earlier turns."""
    recorded = json.loads((FIXTURES / "agent-memory.json").read_text(encoding="utf-8"))
    params = {"has_thoughts": True}
    first = json.loads((await ask(http, sim, sse=False, parameters=params, memory_id="m1"))[1])
    _, raw = await ask(
        http, sim, sse=False, parameters=params, memory_id="m1", prompt="我喜欢喝龙井茶"
    )
    second = json.loads(raw)
    memory = recorded["output"]["thoughts"][1]
    (ours,) = second["output"]["thoughts"]
    assert list(ours) == list(memory)
    assert ours["action_type"] == "api" and ours["action"] == "memory"
    assert json.loads(ours["arguments"]) == {"memory_id": "m1", "query": "我喜欢喝龙井茶"}
    assert ours["action_input_stream"] == ours["arguments"]
    assert json.loads(ours["observation"]) == ["用户说过：hi"]  # in the prompt's language
    assert json.loads(first["output"]["thoughts"][0]["observation"]) == []
    assert list(second["output"]) == list(recorded["output"])
    assert list(second["usage"]["models"][0]) == list(recorded["usage"]["models"][0])
    without = json.loads((await ask(http, sim, sse=False, parameters=params))[1])
    assert "thoughts" not in without["output"]


async def test_workflow_json_answer_has_empty_usage(http: aiohttp.ClientSession) -> None:
    """A workflow app's non-streaming answer has "usage": {}, as recorded."""
    recorded = json.loads((FIXTURES / "workflow.json").read_text(encoding="utf-8"))
    async with BailianSimulator(workflows=["wf-app"]) as sim:
        ours = json.loads((await ask(http, sim, sse=False, app_id="wf-app"))[1])
        agent = json.loads((await ask(http, sim, sse=False))[1])
    assert list(ours) == list(recorded)
    assert list(ours["output"]) == list(recorded["output"])
    assert ours["usage"] == recorded["usage"] == {}
    assert agent["usage"]["models"]


async def test_json_answers_are_gzipped_when_accepted(sim: BailianSimulator) -> None:
    """A JSON answer is gzip-compressed when Accept-Encoding allows it, plain otherwise."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    body = {"input": {"prompt": "hi"}}
    async with aiohttp.ClientSession(auto_decompress=False) as raw_http:
        answers = {}
        for accept in ("gzip, deflate", "identity", "gzip;q=0"):
            async with raw_http.post(
                sim.url_for(), json=body, headers={**headers, "Accept-Encoding": accept}
            ) as resp:
                answers[accept] = resp.headers.get("Content-Encoding"), await resp.read()
    encoding, packed = answers["gzip, deflate"]
    assert encoding == "gzip"
    assert json.loads(gzip.decompress(packed))["output"]["finish_reason"] == "stop"
    for accept in ("identity", "gzip;q=0"):
        encoding, plain = answers[accept]
        assert encoding is None
        assert json.loads(plain)["output"]["finish_reason"] == "stop"


# --------------------------------------------------------------------------- app ids


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json"])
async def test_only_the_simulators_own_app_exists_by_default(
    sim: BailianSimulator, http: aiohttp.ClientSession, sse: bool
) -> None:
    """Any other well-formed id is refused with InvalidParameter (in band on streams)."""
    resp, raw = await ask(http, sim, sse=sse, app_id="010aa085cc9943268731861c9511bb0c")
    if sse:
        ((event, status, error),) = events(raw)
        assert (resp.status, event, status) == (200, "error", 400)
    else:
        error = json.loads(raw)
        assert resp.status == 400
    assert (error["code"], error["message"]) == ("InvalidParameter", BAD_APP)
    ok, _ = await ask(http, sim, sse=sse)
    assert ok.status == 200


async def test_app_ids_workspaces_and_workflows_name_the_apps(
    http: aiohttp.ClientSession,
) -> None:
    """app_ids, workspaces and workflows together are the apps; app_id is the first."""
    async with BailianSimulator(
        app_ids=["a1"], workspaces={"w1": "ws-1"}, workflows=["f1"]
    ) as sim:
        statuses = {}
        for app in ("a1", "w1", "f1", "5f1a7c0e9d2b4e6f8a3c1b7d9e0f2a4c"):
            resp, _ = await ask(http, sim, sse=False, app_id=app)
            statuses[app] = resp.status
    assert sim.app_id == "a1"
    # w1 exists but wants its workspace: 403, not the 400 of an id no app has
    assert statuses == {"a1": 200, "w1": 403, "f1": 200, "5f1a7c0e9d2b4e6f8a3c1b7d9e0f2a4c": 400}


# --------------------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "DataInspectionFailed", "Input or output data may contain inappropriate content."),
        (400, "Arrearage", "Access denied, please make sure your account is in good standing."),
        (400, "InvalidParameter", "Required body invalid, please check the request body format."),
        (403, "App.AccessDenied", "App access denied."),
        (429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
        (502, "ServiceUnavailable", "Bad gateway, please try again later."),
        (403, "Some.NewCode", "Access denied."),
    ],
)
async def test_error_messages_are_chosen_by_code(
    sim: BailianSimulator, http: aiohttp.ClientSession, status: int, code: str, message: str
) -> None:
    """An error's message is its code's own, else its status's, in bodies and frames."""
    sim.inject(Fault.http(status, code))
    sim.inject(Fault.stream_error(status=status, code=code))
    resp, raw = await ask(http, sim, sse=False)
    _, frame = await ask(http, sim)
    ((_, frame_status, in_band),) = events(frame)
    assert (resp.status, json.loads(raw)["message"]) == (status, message)
    assert (frame_status, in_band["code"], in_band["message"]) == (status, code, message)
