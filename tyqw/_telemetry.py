"""OpenTelemetry traces and metrics for tyqw's turns, following the GenAI semantic
conventions; one observer per turn, fed by hook points of the one streaming code path.

tyqw never imports OpenTelemetry itself to find out whether to emit: an application that
configured a tracer or meter provider has imported ``opentelemetry.trace`` or
``opentelemetry.metrics``, so ``turn()`` first looks in ``sys.modules`` (a dict lookup)
and returns ``None`` when neither is there or neither provider is configured. Every hook
site in the turn is then one ``is not None`` test. ``configure_telemetry()`` sets
providers of tyqw's own (tests, an application with several) and the content-capture
switch. ``active()`` is that check alone, for a caller with arguments to compute first.

The internal API, for every kind of turn (app turns use it from ``tyqw/_turn.py``)::

    observer = turn(
        "invoke_agent",             # or "chat" for a model turn
        name=app_id,                # the span is named "{kind} {name}"
        base_url=config.base_url,   # server.address / server.port
        agent_id=app_id,            # app turns only
        request_model=None,         # the requested model, when the request names one
        conversation_id=None,       # the session id, when known before the request
        prompt=prompt,              # recorded only when content capture is on
        stream=True,                # time to first chunk is for streamed answers only
    )
    if observer is not None:        # None: telemetry is off, and nothing else runs
        observer.sending()          # before the first HTTP request (time to first chunk)
        observer.retry(attempt, delay, error, status)      # a span event per retry
        observer.message(message)   # each Message (or StreamError) as it is read
        observer.failed(exc)        # a TyqwError, or the caller's cancellation
        observer.end(session_id=..., request_id=..., finish_reason=..., usage=...,
                     text=...)      # from Turn.finish(); idempotent
        with observer.tool("get_weather", call_id="call_1", arguments="{...}") as tool:
            tool.result(value)      # an execute_tool child span; an exception marks it

Spans: the turn is a CLIENT span ``invoke_agent {app_id}`` (``chat {model}``) in the
caller's current trace; a workflow node is an INTERNAL child span per ``node_id``
(``workflow_node {node_name}``), from its first event to its completed one; a reply that
cites documents gets an INTERNAL ``retrieval`` child span from the request to the first
event that carried them. Metrics: ``gen_ai.client.operation.duration``,
``gen_ai.client.token.usage`` (per model and token type) and
``gen_ai.client.operation.time_to_first_chunk``, with the span's low-cardinality
attributes only (never the conversation id).

Prompt and reply text (``gen_ai.input.messages``, ``gen_ai.output.messages``, retrieved
documents, tool arguments and results) are recorded only when content capture is on:
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (as the contrib GenAI
instrumentations read it) or ``configure_telemetry(capture_content=True)``. No header is
ever recorded, so neither the API key nor a relay token can reach an attribute.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ._exceptions import APIStatusError, StreamError
from ._models import Message, TokenUsage
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["TurnObserver", "active", "configure_telemetry", "server_span", "turn"]

PROVIDER = "dashscope"  # not among the conventions' well-known values: the custom value
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = frozenset({"true", "1", "span_only", "span_and_event"})

# The attribute names of the GenAI, server, error and HTTP conventions, written out: the
# opentelemetry-semantic-conventions package is not a dependency (the tests check these
# against its constants).
OPERATION = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
AGENT_ID = "gen_ai.agent.id"
CONVERSATION_ID = "gen_ai.conversation.id"
DATA_SOURCE_ID = "gen_ai.data_source.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"
# Bailian's own: a workflow node has no GenAI convention, so it takes the provider's prefix.
NODE_ID = "dashscope.workflow.node.id"
NODE_NAME = "dashscope.workflow.node.name"
NODE_TYPE = "dashscope.workflow.node.type"
NODE_STATUS = "dashscope.workflow.node.status"

# The conventions' advised histogram buckets.
_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS = tuple(float(4**n) for n in range(14))


class _Instruments:
    """A tracer and the three histograms, made once per pair of providers."""

    __slots__ = ("duration", "first_chunk", "providers", "tokens", "tracer")

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.providers = (tracer_provider, meter_provider)
        self.tracer: Tracer = tracer_provider.get_tracer("tyqw", __version__)
        meter = meter_provider.get_meter("tyqw", __version__)
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streaming response.",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )


class _Settings:
    __slots__ = ("capture_content", "instruments", "meter_provider", "tracer_provider")

    def __init__(self) -> None:
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.capture_content: bool | None = None
        self.instruments: _Instruments | None = None


_settings = _Settings()


def configure_telemetry(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_content: bool | None = None,
) -> None:
    """Send tyqw's spans and metrics to these OpenTelemetry providers instead of the
    global ones, and switch prompt and reply capture on or off.

    Without this call tyqw uses the global providers (``trace.set_tracer_provider``,
    ``metrics.set_meter_provider``) and emits nothing while none is set. ``None`` keeps
    the global provider; ``capture_content=None`` leaves the choice to
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Calling it with no arguments
    goes back to those defaults. Needs ``pip install 'tyqw[otel]'`` and an SDK.

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        tyqw.configure_telemetry(tracer_provider=provider)
    """
    _settings.tracer_provider = tracer_provider
    _settings.meter_provider = meter_provider
    _settings.capture_content = capture_content
    _settings.instruments = None


def _instruments() -> _Instruments | None:
    """The instruments for the configured providers; ``None`` when nobody configured one."""
    settings = _settings
    tracer_provider: Any = settings.tracer_provider
    meter_provider: Any = settings.meter_provider
    if tracer_provider is None or meter_provider is None:
        modules = sys.modules
        if (
            tracer_provider is None
            and meter_provider is None
            and "opentelemetry.trace" not in modules
            and "opentelemetry.metrics" not in modules
        ):
            return None  # the application never touched OpenTelemetry: the fast answer
        from opentelemetry import metrics, trace

        if tracer_provider is None:
            tracer_provider = trace.get_tracer_provider()
            if isinstance(tracer_provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                tracer_provider = None
        if meter_provider is None:
            meter_provider = metrics.get_meter_provider()
            if isinstance(meter_provider, metrics.NoOpMeterProvider) or (
                type(meter_provider).__name__ == "_ProxyMeterProvider"
            ):
                meter_provider = None
        if tracer_provider is None and meter_provider is None:
            return None
        # One half configured: the other is a no-op, the same object every turn so that
        # the instruments are made once.
        if tracer_provider is None:
            tracer_provider = _NOOP_TRACER_PROVIDER or _noop()[0]
        if meter_provider is None:
            meter_provider = _NOOP_METER_PROVIDER or _noop()[1]
    instruments = settings.instruments
    if instruments is not None and instruments.providers == (tracer_provider, meter_provider):
        return instruments
    instruments = settings.instruments = _Instruments(tracer_provider, meter_provider)
    return instruments


_NOOP_TRACER_PROVIDER: Any = None
_NOOP_METER_PROVIDER: Any = None


def _noop() -> tuple[Any, Any]:
    global _NOOP_TRACER_PROVIDER, _NOOP_METER_PROVIDER
    from opentelemetry import metrics, trace

    if _NOOP_TRACER_PROVIDER is None:
        _NOOP_TRACER_PROVIDER = trace.NoOpTracerProvider()
        _NOOP_METER_PROVIDER = metrics.NoOpMeterProvider()
    return _NOOP_TRACER_PROVIDER, _NOOP_METER_PROVIDER


def active() -> _Instruments | None:
    """The instruments a turn starting now reports to, or ``None``: the check alone, for
    a caller with arguments to compute first (a dict lookup while nobody imported
    OpenTelemetry)."""
    return _instruments()


def capture_content() -> bool:
    """Whether prompt and reply text go into the telemetry."""
    if _settings.capture_content is not None:
        return _settings.capture_content
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in _CAPTURE_ON


def error_type(exc: BaseException) -> str:
    """``error.type``: the DashScope code of a service error, else the error's class name."""
    if isinstance(exc, APIStatusError) and exc.code:
        return exc.code
    return exc.__class__.__name__


def turn(
    kind: Literal["invoke_agent", "chat"],
    *,
    name: str,
    base_url: str,
    agent_id: str | None = None,
    request_model: str | None = None,
    conversation_id: str | None = None,
    data_source_id: str | None = None,
    prompt: str | None = None,
    stream: bool = True,
) -> TurnObserver | None:
    """A ``TurnObserver`` whose span starts now, or ``None`` when telemetry is off."""
    instruments = _instruments()
    if instruments is None:
        return None
    return TurnObserver(
        instruments,
        kind,
        name=name,
        base_url=base_url,
        agent_id=agent_id,
        request_model=request_model,
        conversation_id=conversation_id,
        data_source_id=data_source_id,
        prompt=prompt,
        stream=stream,
    )


class TurnObserver:
    """One turn's span and measurements. Every method is cheap (the OpenTelemetry API
    does not raise: a bad value is logged and dropped by the SDK), and ``end()`` is
    idempotent."""

    __slots__ = (
        "capture",
        "common",
        "context",
        "data_source_id",
        "ended",
        "error",
        "first",
        "instruments",
        "nodes",
        "retrieved",
        "sent",
        "sent_ns",
        "span",
        "started",
        "stream",
    )

    def __init__(
        self,
        instruments: _Instruments,
        kind: str,
        *,
        name: str,
        base_url: str,
        agent_id: str | None,
        request_model: str | None,
        conversation_id: str | None,
        data_source_id: str | None,
        prompt: str | None,
        stream: bool,
    ) -> None:
        from opentelemetry import trace

        self.instruments = instruments
        self.capture = capture_content()
        # The attributes metrics share: low cardinality only (no conversation id).
        common: dict[str, Any] = {OPERATION: kind, PROVIDER_NAME: PROVIDER}
        if agent_id is not None:
            common[AGENT_ID] = agent_id
        if request_model is not None:
            common[REQUEST_MODEL] = request_model
        common.update(_server(base_url))
        self.common = common
        attributes = dict(common)
        if conversation_id is not None:
            attributes[CONVERSATION_ID] = conversation_id
        if self.capture and prompt is not None:
            attributes[INPUT_MESSAGES] = _dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
            )
        self.span: Span = instruments.tracer.start_span(
            f"{kind} {name}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        self.context: Context = trace.set_span_in_context(self.span)
        self.started = time.perf_counter()
        self.sent: float | None = None
        self.sent_ns: int | None = None
        self.first: float | None = None
        self.retrieved: int | None = None
        self.data_source_id = data_source_id
        self.nodes: dict[str, Span] | None = None
        self.error: str | None = None
        self.ended = False
        self.stream = stream

    # -- during the turn -----------------------------------------------------------------

    def sending(self) -> None:
        """The request is about to be sent (the first attempt counts)."""
        if self.sent is None:
            self.sent = time.perf_counter()
            self.sent_ns = time.time_ns()

    def retry(self, attempt: int, delay: float, error: BaseException, status: int | None) -> None:
        """An attempt failed before any event arrived and will be retried after ``delay``."""
        attributes: dict[str, Any] = {
            "tyqw.retry.attempt": attempt,
            "tyqw.retry.delay": delay,
            ERROR_TYPE: error_type(error),
        }
        if status is not None:
            attributes[HTTP_STATUS] = status
        self.span.add_event("tyqw.retry", attributes)

    def message(self, message: Message | StreamError) -> None:
        """An event was read (called for each, in order; a malformed one is a chunk too)."""
        if self.first is None:
            self.first = time.perf_counter()
        if message.__class__ is not Message:
            return
        assert isinstance(message, Message)
        workflow = message.workflow_message
        if workflow is not None:
            self._node(workflow)
        if self.retrieved is None and message.doc_references:
            self.retrieved = time.time_ns()

    def _node(self, workflow: dict[str, Any]) -> None:
        node_id = workflow.get("node_id")
        if not isinstance(node_id, str):
            return
        nodes = self.nodes
        if nodes is None:
            nodes = self.nodes = {}
        span = nodes.get(node_id)
        if span is None:
            from opentelemetry import trace

            node_name = workflow.get("node_name")
            attributes = {NODE_ID: node_id, PROVIDER_NAME: PROVIDER}
            if isinstance(node_name, str):
                attributes[NODE_NAME] = node_name
            node_type = workflow.get("node_type")
            if isinstance(node_type, str):
                attributes[NODE_TYPE] = node_type
            span = nodes[node_id] = self.instruments.tracer.start_span(
                f"workflow_node {node_name if isinstance(node_name, str) else node_id}",
                context=self.context,
                kind=trace.SpanKind.INTERNAL,
                attributes=attributes,
            )
        status = workflow.get("node_status")
        if isinstance(status, str):
            span.set_attribute(NODE_STATUS, status)
        completed = workflow.get("node_is_completed")
        if completed is True or completed == "true":
            if isinstance(status, str) and status.lower() in ("failed", "error", "fail"):
                _set_error(span, "workflow_node_failed", status)
            span.end()
            del nodes[node_id]

    @contextmanager
    def tool(
        self, name: str, *, call_id: str | None = None, arguments: str | None = None
    ) -> Iterator[ToolObserver]:
        """An ``execute_tool {name}`` child span around a tool run; an exception that
        leaves the block marks it failed (and goes on)."""
        from opentelemetry import trace

        attributes: dict[str, Any] = {
            OPERATION: "execute_tool",
            PROVIDER_NAME: PROVIDER,
            TOOL_NAME: name,
        }
        if call_id is not None:
            attributes[TOOL_CALL_ID] = call_id
        if self.capture and arguments is not None:
            attributes[TOOL_ARGUMENTS] = arguments
        span = self.instruments.tracer.start_span(
            f"execute_tool {name}",
            context=self.context,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
        )
        try:
            yield ToolObserver(span, self.capture)
        except BaseException as exc:
            _set_error(span, error_type(exc))
            raise
        finally:
            span.end()

    # -- the end ---------------------------------------------------------------------------

    def failed(self, exc: BaseException) -> None:
        """The turn ends with this error (a TyqwError or the caller's cancellation)."""
        if self.error is None and not self.ended:
            self.error = error_type(exc)

    def end(
        self,
        *,
        session_id: str | None,
        request_id: str | None,
        finish_reason: str | None,
        usage: Mapping[str, TokenUsage],
        text: str | None = None,
        doc_references: list[dict[str, Any]] | None = None,
        interrupted: str | None = None,
    ) -> None:
        """End the span and record the metrics. ``text`` is the reply, recorded only with
        content capture on."""
        if self.ended:
            return
        self.ended = True
        now = time.perf_counter()
        span = self.span
        common = self.common
        metric_attributes = dict(common)
        # One set_attributes: the SDK takes its lock and checks once per call.
        final: dict[str, Any] = {}
        if session_id:
            final[CONVERSATION_ID] = session_id
        if request_id:
            final[RESPONSE_ID] = request_id
        if finish_reason is not None:
            final[FINISH_REASONS] = (finish_reason,)
        if usage:
            final[INPUT_TOKENS] = sum(u.input_tokens for u in usage.values())
            final[OUTPUT_TOKENS] = sum(u.output_tokens for u in usage.values())
            if len(usage) == 1:
                (model,) = usage
                final[RESPONSE_MODEL] = metric_attributes[RESPONSE_MODEL] = model
        first_chunk = None
        if self.stream and self.first is not None and self.sent is not None:
            first_chunk = final[TIME_TO_FIRST_CHUNK] = self.first - self.sent
        if interrupted is not None:
            span.add_event("tyqw.interrupted", {"tyqw.interruption": interrupted})
        if self.capture and text is not None:
            output: dict[str, Any] = {
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
            }
            if finish_reason is not None:
                output["finish_reason"] = finish_reason
            final[OUTPUT_MESSAGES] = _dumps([output])
        span.set_attributes(final)
        if doc_references and self.retrieved is not None:
            self._retrieval(doc_references)
        for node in (self.nodes or {}).values():
            node.end()  # a node the turn left before its completed event
        self.nodes = None
        if self.error is not None:
            _set_error(span, self.error)
            metric_attributes[ERROR_TYPE] = self.error
        span.end()
        instruments = self.instruments
        instruments.duration.record(now - self.started, metric_attributes)
        if first_chunk is not None:
            instruments.first_chunk.record(first_chunk, metric_attributes)
        for model, used in usage.items():
            per_model = dict(metric_attributes)
            per_model[RESPONSE_MODEL] = model
            per_model[TOKEN_TYPE] = "input"
            instruments.tokens.record(used.input_tokens, per_model)
            per_model = dict(per_model)
            per_model[TOKEN_TYPE] = "output"
            instruments.tokens.record(used.output_tokens, per_model)

    def _retrieval(self, doc_references: list[dict[str, Any]]) -> None:
        from opentelemetry import trace

        attributes: dict[str, Any] = {OPERATION: "retrieval", PROVIDER_NAME: PROVIDER}
        name = "retrieval"
        if self.data_source_id is not None:
            attributes[DATA_SOURCE_ID] = self.data_source_id
            name = f"retrieval {self.data_source_id}"
        attributes["dashscope.retrieval.cited_documents"] = len(doc_references)
        if self.capture:
            attributes[RETRIEVAL_DOCUMENTS] = _dumps(
                [
                    {
                        key: reference[key]
                        for key in ("index_id", "doc_id", "title", "text")
                        if key in reference
                    }
                    for reference in doc_references
                    if isinstance(reference, dict)
                ]
            )
        # The service retrieves after the request and before the first event that cites
        # what it found: that is the span's extent as a client can see it.
        span = self.instruments.tracer.start_span(
            name,
            context=self.context,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=self.sent_ns,
        )
        span.end(end_time=self.retrieved)


class ToolObserver:
    """The tool run of ``TurnObserver.tool()``: ``result(value)`` records what it
    returned (with content capture on)."""

    __slots__ = ("capture", "span")

    def __init__(self, span: Span, capture: bool) -> None:
        self.span = span
        self.capture = capture

    def result(self, value: object) -> None:
        if self.capture:
            self.span.set_attribute(
                TOOL_RESULT, value if isinstance(value, str) else _dumps(value)
            )

    def failed(self, error: str) -> None:
        """The tool reported a failure without raising (e.g. bad arguments)."""
        _set_error(self.span, error)


def _set_error(span: Span, kind: str, description: str | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, description or kind))


@functools.lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[tuple[str, Any], ...]:
    """``server.address`` and ``server.port`` of a base URL (parsed once per URL)."""
    url = urlsplit(base_url)
    if not url.hostname:
        return ()
    port = url.port or (443 if url.scheme == "https" else 80)
    return ((SERVER_ADDRESS, url.hostname), (SERVER_PORT, port))


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# -- the relay's server span ---------------------------------------------------------------


@contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Span | None]:
    """A SERVER span continuing the caller's ``traceparent``, current inside the block
    (so a turn run under it is its child); yields ``None`` when telemetry is off. The
    caller records the outcome (``set_error``)."""
    instruments = _instruments()
    if instruments is None:
        yield None
        return
    from opentelemetry import context, propagate, trace

    parent = propagate.extract(headers)
    span = instruments.tracer.start_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        context.detach(token)
        span.end()


def set_error(span: Span, kind: str) -> None:
    """Mark ``span`` failed with ``error.type`` ``kind``."""
    _set_error(span, kind)
