"""OpenTelemetry: spans and metrics of app turns and of the relay, by the GenAI semantic
conventions, read back through the SDK's in-memory exporter and metric reader while the
simulator answers. Each test has providers of its own (``configure_telemetry``), never
the global ones, so nothing leaks into other tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import SpanKind, StatusCode

import tyqw
from tests.helpers import ROOT, docs_python_blocks, env_without, run_python, sim_session
from tests.relay_helpers import ALICE, SSE_HEADERS, Relay, auth, body, post
from tyqw import _telemetry
from tyqw.relay import create_app
from tyqw.testing import BailianSimulator, Fault

KEY = "sk-telemetry-secret-7c1f9e2b4d"
BOUND = 10.0


def name(module: Any, constant: str, value: str) -> str:
    """The conventions' own constant where the installed package has it (older packages
    lack the newer names), checked against the name tyqw writes."""
    own = getattr(module, constant, value)
    assert own == value, f"{constant} is {own!r} in the conventions, tyqw writes {value!r}"
    return value


OPERATION = name(gen_ai, "GEN_AI_OPERATION_NAME", _telemetry.OPERATION)
PROVIDER = name(gen_ai, "GEN_AI_PROVIDER_NAME", _telemetry.PROVIDER_NAME)
AGENT_ID = name(gen_ai, "GEN_AI_AGENT_ID", _telemetry.AGENT_ID)
CONVERSATION_ID = name(gen_ai, "GEN_AI_CONVERSATION_ID", _telemetry.CONVERSATION_ID)
DATA_SOURCE_ID = name(gen_ai, "GEN_AI_DATA_SOURCE_ID", _telemetry.DATA_SOURCE_ID)
REQUEST_MODEL = name(gen_ai, "GEN_AI_REQUEST_MODEL", _telemetry.REQUEST_MODEL)
RESPONSE_MODEL = name(gen_ai, "GEN_AI_RESPONSE_MODEL", _telemetry.RESPONSE_MODEL)
RESPONSE_ID = name(gen_ai, "GEN_AI_RESPONSE_ID", _telemetry.RESPONSE_ID)
FINISH_REASONS = name(gen_ai, "GEN_AI_RESPONSE_FINISH_REASONS", _telemetry.FINISH_REASONS)
FIRST_CHUNK = name(gen_ai, "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK", _telemetry.TIME_TO_FIRST_CHUNK)
INPUT_TOKENS = name(gen_ai, "GEN_AI_USAGE_INPUT_TOKENS", _telemetry.INPUT_TOKENS)
OUTPUT_TOKENS = name(gen_ai, "GEN_AI_USAGE_OUTPUT_TOKENS", _telemetry.OUTPUT_TOKENS)
TOKEN_TYPE = name(gen_ai, "GEN_AI_TOKEN_TYPE", _telemetry.TOKEN_TYPE)
INPUT_MESSAGES = name(gen_ai, "GEN_AI_INPUT_MESSAGES", _telemetry.INPUT_MESSAGES)
OUTPUT_MESSAGES = name(gen_ai, "GEN_AI_OUTPUT_MESSAGES", _telemetry.OUTPUT_MESSAGES)
DOCUMENTS = name(gen_ai, "GEN_AI_RETRIEVAL_DOCUMENTS", _telemetry.RETRIEVAL_DOCUMENTS)
TOOL_NAME = name(gen_ai, "GEN_AI_TOOL_NAME", _telemetry.TOOL_NAME)
TOOL_CALL_ID = name(gen_ai, "GEN_AI_TOOL_CALL_ID", _telemetry.TOOL_CALL_ID)
TOOL_ARGUMENTS = name(gen_ai, "GEN_AI_TOOL_CALL_ARGUMENTS", _telemetry.TOOL_ARGUMENTS)
SERVER_ADDRESS = name(server_attributes, "SERVER_ADDRESS", _telemetry.SERVER_ADDRESS)
SERVER_PORT = name(server_attributes, "SERVER_PORT", _telemetry.SERVER_PORT)
ERROR_TYPE = name(error_attributes, "ERROR_TYPE", _telemetry.ERROR_TYPE)
DURATION = name(
    gen_ai_metrics, "GEN_AI_CLIENT_OPERATION_DURATION", "gen_ai.client.operation.duration"
)
TOKEN_USAGE = name(gen_ai_metrics, "GEN_AI_CLIENT_TOKEN_USAGE", "gen_ai.client.token.usage")
FIRST_CHUNK_METRIC = name(
    gen_ai_metrics,
    "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK",
    "gen_ai.client.operation.time_to_first_chunk",
)


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def one(self, prefix: str) -> ReadableSpan:
        """The one finished span whose name starts with ``prefix``."""
        found = [s for s in self.finished() if s.name.startswith(prefix)]
        assert len(found) == 1, [s.name for s in self.finished()]
        return found[0]

    def points(self, metric: str) -> list[Any]:
        """Every data point of ``metric`` recorded so far."""
        data = self.metrics.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for each in scope.metrics:
                    if each.name == metric:
                        found.extend(each.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Providers of this test's own, given to tyqw, and taken back afterwards."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tyqw.configure_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(spans, reader, tracer_provider)
    finally:
        tyqw.configure_telemetry()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
async def secret_sim() -> AsyncIterator[BailianSimulator]:
    """A simulator whose key is easy to search for."""
    async with BailianSimulator(api_key=KEY, workflows=["wf-app"]) as simulator:
        yield simulator


def session(sim: BailianSimulator, state_dir: Path, **kwargs: Any) -> tyqw.Session:
    return sim_session(sim, state_dir, **kwargs)


def values(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute value (spans and their events) as text."""
    found: list[str] = []
    for span in spans:
        for attributes in [span.attributes, *(e.attributes for e in span.events)]:
            found.extend(json.dumps(v, ensure_ascii=False) for v in (attributes or {}).values())
        found.append(span.name)
        found.append(span.status.description or "")
    return found


# -- app turns -------------------------------------------------------------------------


def assert_inside(child: ReadableSpan, parent: ReadableSpan) -> None:
    """``child`` started and ended while ``parent`` was open."""
    assert child.start_time is not None and parent.start_time is not None
    assert child.end_time is not None and parent.end_time is not None
    assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time


async def test_app_turn_is_an_invoke_agent_client_span(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """A turn is one CLIENT span named after the app, with the conventions' attributes."""
    async with session(secret_sim, state_dir) as s:
        reply = await s.send("hi")
    span = telemetry.one("invoke_agent")
    assert span.name == f"invoke_agent {secret_sim.app_id}"
    assert span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes[OPERATION] == "invoke_agent"
    assert attributes[PROVIDER] == "dashscope"
    assert attributes[AGENT_ID] == secret_sim.app_id
    assert attributes[CONVERSATION_ID] == reply.session_id
    assert attributes[RESPONSE_ID] == reply.request_id
    assert attributes[FINISH_REASONS] == ("stop",)
    assert reply.usage is not None
    (model,) = reply.usage["models"]
    assert attributes[INPUT_TOKENS] == model["input_tokens"]
    assert attributes[OUTPUT_TOKENS] == model["output_tokens"]
    assert attributes[RESPONSE_MODEL] == model["model_id"]
    assert attributes[SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[SERVER_PORT] == secret_sim.port
    first_chunk = attributes[FIRST_CHUNK]
    assert isinstance(first_chunk, float) and 0 < first_chunk < span_seconds(span)
    assert ERROR_TYPE not in attributes
    assert span.status.status_code is StatusCode.UNSET


def span_seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


async def test_turn_span_is_a_child_of_the_callers_span(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """A turn run inside the application's own span is that span's child."""
    from opentelemetry import trace

    tracer = trace.get_tracer("app", tracer_provider=telemetry.tracer_provider)
    async with session(secret_sim, state_dir) as s:
        with tracer.start_as_current_span("handle chat request") as outer:
            async for _ in s.stream("hi"):
                pass
    turn = telemetry.one("invoke_agent")
    assert turn.parent is not None
    assert turn.parent.span_id == outer.get_span_context().span_id
    assert turn.context.trace_id == outer.get_span_context().trace_id


async def test_metrics_follow_the_conventions_without_the_conversation(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """Duration, tokens per type and time to first chunk are recorded, with low-cardinality
    attributes only: the conversation id is on the span, never on a metric."""
    async with session(secret_sim, state_dir) as s:
        await s.send("hi", model_id="qwen-max")
        reply = await s.send("again", model_id="qwen-max")
    (duration,) = telemetry.points(DURATION)
    assert duration.count == 2
    attributes = dict(duration.attributes)
    assert attributes[OPERATION] == "invoke_agent"
    assert attributes[PROVIDER] == "dashscope"
    assert attributes[AGENT_ID] == secret_sim.app_id
    assert attributes[REQUEST_MODEL] == "qwen-max"
    assert attributes[SERVER_PORT] == secret_sim.port
    (first_chunk,) = telemetry.points(FIRST_CHUNK_METRIC)
    assert first_chunk.count == 2
    tokens = {p.attributes[TOKEN_TYPE]: p for p in telemetry.points(TOKEN_USAGE)}
    assert set(tokens) == {"input", "output"}
    assert reply.usage is not None
    assert tokens["output"].count == 2
    assert tokens["output"].max >= reply.usage["models"][0]["output_tokens"]
    everything = [*telemetry.points(DURATION), *telemetry.points(TOKEN_USAGE)]
    everything += telemetry.points(FIRST_CHUNK_METRIC)
    for point in everything:
        assert CONVERSATION_ID not in point.attributes
        assert str(reply.session_id) not in map(str, point.attributes.values())


async def test_workflow_nodes_are_child_spans(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """Each workflow node is an INTERNAL child span of the turn, ended at its last event."""
    async with session(secret_sim, state_dir, app_id="wf-app") as s:
        events: list[tyqw.WorkflowEvent] = []
        s.on("workflow", events.append)
        await s.send("hi", flow_stream_mode="message_format")
    turn = telemetry.one("invoke_agent wf-app")
    nodes = [s for s in telemetry.finished() if s.name.startswith("workflow_node")]
    names = {e.node_name for e in events}
    assert names and {n.name for n in nodes} == {f"workflow_node {n}" for n in names}
    for node in nodes:
        assert node.kind is SpanKind.INTERNAL
        assert node.parent is not None and node.parent.span_id == turn.context.span_id
        assert node.attributes is not None
        assert node.attributes["dashscope.workflow.node.id"] in {e.node_id for e in events}
        assert_inside(node, turn)


async def test_a_reply_that_cites_documents_has_a_retrieval_span(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """Citations make a retrieval child span named after the knowledge base, and the
    documents themselves stay out of it while content capture is off."""
    async with session(secret_sim, state_dir) as s:
        reply = await s.send("hi", rag_options={"pipeline_ids": ["kb-7"]})
    assert reply.citations
    turn = telemetry.one("invoke_agent")
    retrieval = telemetry.one("retrieval")
    assert retrieval.name == "retrieval kb-7"
    assert retrieval.parent is not None and retrieval.parent.span_id == turn.context.span_id
    attributes = dict(retrieval.attributes or {})
    assert attributes[OPERATION] == "retrieval"
    assert attributes[DATA_SOURCE_ID] == "kb-7"
    assert DOCUMENTS not in attributes
    assert_inside(retrieval, turn)


async def test_a_retried_turn_shows_each_retry(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """A retry is a span event with its error type and status; the turn still succeeds."""
    secret_sim.inject(Fault.http(503), times=2)
    async with session(secret_sim, state_dir, max_retries=2) as s:
        reply = await s.send("hi")
    assert reply.error is None
    span = telemetry.one("invoke_agent")
    retries = [e for e in span.events if e.name == "tyqw.retry"]
    assert [e.attributes["tyqw.retry.attempt"] for e in retries if e.attributes] == [1, 2]
    for event in retries:
        assert event.attributes is not None
        assert event.attributes["http.response.status_code"] == 503
        assert event.attributes[ERROR_TYPE]
    assert span.status.status_code is StatusCode.UNSET
    assert ERROR_TYPE not in (span.attributes or {})


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(Fault.http(400, "InvalidParameter"), "InvalidParameter", id="http-code"),
        pytest.param(
            Fault.stream_error(after=2, status=400, code="DataInspectionFailed"),
            "DataInspectionFailed",
            id="in-stream-code",
        ),
        pytest.param(Fault.truncate(after=2), "IncompleteStreamError", id="tyqw-class"),
    ],
)
async def test_a_failed_turn_has_its_error_type(
    telemetry: Telemetry,
    secret_sim: BailianSimulator,
    state_dir: Path,
    fault: Fault,
    expected: str,
) -> None:
    """A failed turn's span and duration carry error.type: the DashScope code, else the
    tyqw error class; the span's status is ERROR."""
    secret_sim.inject(fault)
    async with session(secret_sim, state_dir, max_retries=0) as s:
        with pytest.raises(tyqw.TyqwError):
            await s.send("hi")
    span = telemetry.one("invoke_agent")
    assert (span.attributes or {})[ERROR_TYPE] == expected
    assert span.status.status_code is StatusCode.ERROR
    (duration,) = telemetry.points(DURATION)
    assert duration.attributes[ERROR_TYPE] == expected


async def test_a_cancelled_turn_ends_its_span(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """A turn whose task the caller cancels ends its span at once, marked cancelled."""
    secret_sim.inject(Fault.stall(60, after=1))
    first = asyncio.Event()

    async def chat(s: tyqw.Session) -> None:
        async for _ in s.stream("hi"):
            first.set()

    async with session(secret_sim, state_dir) as s:
        task = asyncio.create_task(chat(s))
        await asyncio.wait_for(first.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    span = telemetry.one("invoke_agent")
    assert (span.attributes or {})[ERROR_TYPE] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR


async def test_an_aborted_turn_is_not_an_error(
    telemetry: Telemetry, secret_sim: BailianSimulator, state_dir: Path
) -> None:
    """abort() ends the span without an error, with an event that says so."""
    secret_sim.inject(Fault.stall(60, after=1))
    async with session(secret_sim, state_dir) as s:
        s.on("message", lambda m: s.abort())
        reply = await s.send("hi")
    assert reply.error is None
    span = telemetry.one("invoke_agent")
    assert span.status.status_code is StatusCode.UNSET
    (event,) = [e for e in span.events if e.name == "tyqw.interrupted"]
    assert event.attributes == {"tyqw.interruption": "abort"}


async def test_content_is_absent_unless_switched_on(
    telemetry: Telemetry,
    secret_sim: BailianSimulator,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prompt, reply and documents appear only with the conventions' capture switch on."""
    prompt = "a prompt nobody else may read"
    async with session(secret_sim, state_dir) as s:
        quiet = await s.send(prompt, rag_options={"pipeline_ids": ["kb-7"]})
        recorded = values(telemetry.finished())
        assert not any(prompt in v for v in recorded)
        assert not any(quiet.text[:20] in v for v in recorded)
        telemetry.spans.clear()
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        reply = await s.send(prompt, rag_options={"pipeline_ids": ["kb-7"]})
    attributes = dict(telemetry.one("invoke_agent").attributes or {})
    assert json.loads(str(attributes[INPUT_MESSAGES])) == [
        {"role": "user", "parts": [{"type": "text", "content": prompt}]}
    ]
    assert json.loads(str(attributes[OUTPUT_MESSAGES])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": reply.text}],
            "finish_reason": "stop",
        }
    ]
    documents = json.loads(str((telemetry.one("retrieval").attributes or {})[DOCUMENTS]))
    assert {d["index_id"] for d in documents} == {c.index_id for c in reply.citations}


async def test_no_secret_in_any_attribute(
    telemetry: Telemetry,
    secret_sim: BailianSimulator,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even with content capture on, through retries and failures, no span, event or
    metric attribute holds the API key."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    secret_sim.inject(Fault.http(503))
    async with session(secret_sim, state_dir, max_retries=1) as s:
        await s.send("hi", rag_options={"pipeline_ids": ["kb-7"]}, has_thoughts=True)
        secret_sim.inject(Fault.http(401, "InvalidApiKey"))
        with pytest.raises(tyqw.AuthenticationError):
            await s.send("hi")
    async with session(secret_sim, state_dir, app_id="wf-app") as s:
        await s.send("hi", flow_stream_mode="message_format")
    recorded = values(telemetry.finished())
    assert len(telemetry.finished()) >= 5
    assert not any(KEY in v for v in recorded)
    for metric in (DURATION, TOKEN_USAGE, FIRST_CHUNK_METRIC):
        for point in telemetry.points(metric):
            assert not any(KEY in str(v) for v in point.attributes.values())


async def test_tool_runs_are_execute_tool_child_spans(telemetry: Telemetry) -> None:
    """The internal tool API: an execute_tool span under the turn, failed if the tool raises."""
    observer = _telemetry.turn("chat", name="qwen-plus", base_url="https://example.com/api/v1")
    assert observer is not None
    with observer.tool("get_weather", call_id="call_1", arguments='{"city": "Paris"}') as tool:
        tool.result("rainy")
    with (
        pytest.raises(ValueError, match="no such city"),
        observer.tool("get_weather", call_id="call_2"),
    ):
        raise ValueError("no such city")
    observer.end(session_id=None, request_id="r-1", finish_reason="stop", usage={})
    chat = telemetry.one("chat qwen-plus")
    assert (chat.attributes or {})[SERVER_PORT] == 443
    ok, failed = sorted(
        (s for s in telemetry.finished() if s.name == "execute_tool get_weather"),
        key=lambda s: str((s.attributes or {})[TOOL_CALL_ID]),
    )
    for span in (ok, failed):
        assert span.parent is not None and span.parent.span_id == chat.context.span_id
        assert (span.attributes or {})[OPERATION] == "execute_tool"
        assert (span.attributes or {})[TOOL_NAME] == "get_weather"
    assert TOOL_ARGUMENTS not in (ok.attributes or {})  # content capture is off
    assert ok.status.status_code is StatusCode.UNSET
    assert (failed.attributes or {})[ERROR_TYPE] == "ValueError"
    assert failed.status.status_code is StatusCode.ERROR


# -- the relay -------------------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("trace_user", "expected"),
    [
        pytest.param(None, {}, id="user-off-by-default"),
        pytest.param(
            "hash", {"user.hash": hashlib.sha256(b"alice").hexdigest()[:16]}, id="user-hash"
        ),
        pytest.param("id", {"user.id": "alice"}, id="user-id"),
        pytest.param(lambda user: f"team-{user}", {"user.id": "team-alice"}, id="user-function"),
    ],
)
async def test_relay_request_continues_the_callers_trace(
    telemetry: Telemetry,
    secret_sim: BailianSimulator,
    trace_user: Any,
    expected: dict[str, str],
) -> None:
    """A request with a traceparent makes a SERVER span in that trace, the upstream turn
    its child; the user is on it only as the operator chose, and no token or key is."""
    headers = auth(ALICE, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01", **SSE_HEADERS)
    async with Relay(secret_sim, trace_user=trace_user) as relay, aiohttp.ClientSession() as http:
        answer = await post(http, relay.url(), body("hi"), headers)
    assert answer.status == 200
    server = telemetry.one("POST ")
    assert server.kind is SpanKind.SERVER
    assert server.name == "POST /api/v1/apps/{app_id}/completion"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    attributes = dict(server.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert {k: v for k, v in attributes.items() if k.startswith("user.")} == expected
    turn = telemetry.one("invoke_agent")
    assert turn.context.trace_id == server.context.trace_id
    assert turn.parent is not None and turn.parent.span_id == server.context.span_id
    recorded = values(telemetry.finished())
    assert not any(ALICE in v or KEY in v for v in recorded)


async def test_relay_refusal_is_recorded_on_its_span(
    telemetry: Telemetry, secret_sim: BailianSimulator
) -> None:
    """A refused request (a bad token) is a SERVER span with its status, and no turn."""
    async with Relay(secret_sim) as relay, aiohttp.ClientSession() as http:
        answer = await post(http, relay.url(), body("hi"), auth("wrong-token-1234567890"))
    assert answer.status == 401
    server = telemetry.one("POST ")
    assert (server.attributes or {})["http.response.status_code"] == 401
    assert not [s for s in telemetry.finished() if s.name.startswith("invoke_agent")]
    assert not any("wrong-token" in v for v in values(telemetry.finished()))


def test_relay_refuses_an_unknown_trace_user_form() -> None:
    """trace_user takes None, "id", "hash" or a function; anything else fails at once."""
    with pytest.raises(ValueError, match="trace_user must be"):
        create_app(["app"], allow_anonymous=True, api_key="sk-x", trace_user="email")  # type: ignore[arg-type]


# -- the global providers, and without OpenTelemetry ---------------------------------------

_GLOBAL_RUN = """
import asyncio, tempfile

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tyqw
from tyqw.testing import BailianSimulator

async def main():
    async with BailianSimulator() as sim:
        async with tyqw.Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url,
            state_dir=tempfile.mkdtemp(),
        ) as session:
            await session.send("before any provider")
            spans = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(spans))
            trace.set_tracer_provider(provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            await session.send("after")
    names = [s.name.split()[0] for s in spans.get_finished_spans()]
    data = reader.get_metrics_data()
    metric_names = sorted(
        m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
    )
    print(names, metric_names)

asyncio.run(main())
"""


def test_the_global_providers_need_no_call() -> None:
    """With the application's global providers set, turns report to them without any tyqw
    call, from the first turn after they are set."""
    done = run_python(textwrap.dedent(_GLOBAL_RUN), cwd=ROOT, env=env_without("OTEL_"))
    assert done.returncode == 0, done.stderr
    spans, metrics = done.stdout.strip().split("] [")
    assert spans == "['invoke_agent'"
    assert metrics == f"'{DURATION}', '{FIRST_CHUNK_METRIC}', '{TOKEN_USAGE}']"


_BLOCKED_RUN = """
import asyncio, sys, tempfile

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

if BLOCK:
    sys.meta_path.insert(0, Blocker())

import tyqw
from tyqw.relay import create_app
from tyqw.testing import BailianSimulator

async def main():
    async with BailianSimulator() as sim:
        async with tyqw.Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url,
            state_dir=tempfile.mkdtemp(),
        ) as session:
            reply = await session.send("hi")
    create_app([sim.app_id], allow_anonymous=True, api_key="sk-x", trace_user="hash")
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    print(reply.finish_reason, loaded)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "block", [pytest.param(True, id="not-installed"), pytest.param(False, id="installed-unused")]
)
def test_tyqw_runs_without_opentelemetry(block: bool) -> None:
    """tyqw imports and runs a turn with OpenTelemetry not installed, and, installed but
    not configured, never imports it."""
    script = f"BLOCK = {block}\n" + textwrap.dedent(_BLOCKED_RUN)
    done = run_python(script, cwd=ROOT, env=env_without("OTEL_"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stop []"


def test_the_docs_example_runs_and_prints_the_spans(tmp_path: Path) -> None:
    """docs/telemetry.md's Python example runs as written and prints the turn's span and
    its retrieval child, as the page shows."""
    blocks = docs_python_blocks("telemetry.md")
    assert blocks
    env = env_without("OTEL_")
    env["XDG_STATE_HOME"] = str(tmp_path)
    for block in blocks:
        done = run_python(block, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert '"name": "retrieval kb-handbook"' in done.stdout
        assert '"name": "invoke_agent ' in done.stdout
        assert '"kind": "SpanKind.CLIENT"' in done.stdout
