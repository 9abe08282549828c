"""The official ``dashscope`` SDK (``Application.call``) against the simulator.

Once against ``tyqw simulate`` run as a child process, faults given with ``--fault``,
and once against a ``BailianSimulator`` serving from a thread of this process, faults
injected from the same specs: the SDK must see what it would see from the service.
dashscope is synchronous (requests), so the in-process simulator runs its own event
loop in a thread. dashscope raises no warning on import or use, so ``filterwarnings =
error`` applies here unchanged.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tyqw._simulator import parse_fault_spec
from tyqw.testing import BailianSimulator, default_reply

from .helpers import missing
from .simulate_process import BOUND, child_env, simulate

BAD_APP = "Required parameter(AppId) missing or invalid, please check the request parameters."


@dataclass
class Target:
    """Where the SDK is pointed: a simulator's base URL, key and app id."""

    base_url: str
    api_key: str
    app_id: str


Start = Callable[..., AbstractContextManager[Target]]


@pytest.fixture
def sdk() -> Iterator[Any]:
    """``dashscope.Application``; its shared HTTP session is closed after each test."""
    try:
        import dashscope
    except ImportError:
        missing("the official SDK is a dev dependency: pip install -e '.[dev]'")
    yield dashscope.Application
    dashscope.close_shared_sync_session()


@contextmanager
def in_process(*specs: str) -> Iterator[Target]:
    """A BailianSimulator on its own event loop in a thread, with these faults queued."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim = BailianSimulator(delay=0)
    for spec in specs:
        sim.inject(*parse_fault_spec(spec))
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result(BOUND)
        yield Target(sim.base_url, sim.api_key, sim.app_id)
    finally:
        asyncio.run_coroutine_threadsafe(sim.aclose(), loop).result(BOUND)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(BOUND)
        loop.close()


@pytest.fixture(params=["tyqw-simulate", "in-process"])
def start(request: pytest.FixtureRequest, tmp_path: Path) -> Start:
    """``with start(*fault_specs) as target``: a simulator of the kind under test."""
    if request.param == "in-process":
        return in_process

    @contextmanager
    def external(*specs: str) -> Iterator[Target]:
        args = [arg for spec in specs for arg in ("--fault", spec)]
        with simulate(tmp_path, *args) as sim:
            env = sim.exports
            url, key = env["DASHSCOPE_HTTP_BASE_URL"], env["DASHSCOPE_API_KEY"]
            yield Target(url, key, env["DASHSCOPE_APP_ID"])

    return external


def call(sdk: Any, target: Target, prompt: str, **kwargs: Any) -> Any:
    kwargs.setdefault("app_id", target.app_id)
    kwargs.setdefault("api_key", target.api_key)
    return sdk.call(prompt=prompt, base_address=target.base_url, request_timeout=BOUND, **kwargs)


def test_stream(sdk: Any, start: Start) -> None:
    """A stream: every chunk 200, the pieces make the reply, the last one says stop."""
    with start() as target:
        chunks = list(call(sdk, target, "hello", stream=True, incremental_output=True))
    assert [c.status_code for c in chunks] == [200] * len(chunks)
    assert len(chunks) > 2
    assert "".join(c.output.text for c in chunks) == default_reply("hello", [])
    assert [c.output.finish_reason for c in chunks][-2:] == ["null", "stop"]
    assert len({c.output.session_id for c in chunks}) == 1


def test_non_stream(sdk: Any, start: Start) -> None:
    """One call, one answer: the reply text, stop, and the usage per model."""
    with start() as target:
        answer = call(sdk, target, "hello")
    assert answer.status_code == 200
    assert answer.output.text == default_reply("hello", [])
    assert answer.output.finish_reason == "stop"
    assert answer.usage.models[0].model_id == "qwen-plus"


def test_multi_turn_with_session_id(sdk: Any, start: Start) -> None:
    """Passing back output.session_id continues the conversation; without it, a new one."""
    with start() as target:
        first = call(sdk, target, "我叫小明")
        second = call(sdk, target, "我叫什么名字？", session_id=first.output.session_id)
        fresh = call(sdk, target, "我叫什么名字？")
    assert second.output.session_id == first.output.session_id
    assert second.output.text == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"
    assert fresh.output.text.startswith("你还没告诉我你的名字呢")


def test_bad_app_id(sdk: Any, start: Start) -> None:
    """An unknown app id: InvalidParameter, in band on a stream, HTTP 400 without."""
    with start() as target:
        streamed = list(call(sdk, target, "hi", app_id="0" * 32, stream=True))
        single = call(sdk, target, "hi", app_id="0" * 32)
    (error,) = streamed
    for answer in (error, single):
        assert (answer.status_code, answer.code, answer.message) == (
            400,
            "InvalidParameter",
            BAD_APP,
        )


def test_bad_key(sdk: Any, start: Start) -> None:
    """A wrong key: 401 InvalidApiKey, streaming or not."""
    with start() as target:
        streamed = list(call(sdk, target, "hi", api_key="sk-wrong", stream=True))
        single = call(sdk, target, "hi", api_key="sk-wrong")
    for answer in (*streamed, single):
        assert (answer.status_code, answer.code) == (401, "InvalidApiKey")


def test_in_band_error_after_partial_output(sdk: Any, start: Start) -> None:
    """error:400,DataInspectionFailed@2: two chunks, then the error with its own message."""
    with start("error:400,DataInspectionFailed@2") as target:
        chunks = list(call(sdk, target, "hello", stream=True, incremental_output=True))
    *parts, error = chunks
    assert [c.status_code for c in parts] == [200, 200]
    assert "".join(c.output.text for c in parts) == default_reply("hello", [])[:8]
    assert (error.status_code, error.code) == (400, "DataInspectionFailed")
    assert error.message == "Input or output data may contain inappropriate content."


def test_throttled_twice_then_answered(sdk: Any, start: Start) -> None:
    """http:429x2: the next two calls are 429 Throttling, the third is answered."""
    with start("http:429x2") as target:
        answers = [call(sdk, target, "hi") for _ in range(3)]
    assert [(a.status_code, a.code) for a in answers] == [
        (429, "Throttling"),
        (429, "Throttling"),
        (200, ""),
    ]


def test_cut_stream_breaks_the_sdk_iteration(sdk: Any, start: Start) -> None:
    """cut:1: one chunk arrives, then the SDK's iteration fails on the broken body."""
    import requests

    received: list[str] = []

    def read_all(chunks: Iterator[Any]) -> None:
        received.extend(chunk.output.text for chunk in chunks)

    with start("cut:1") as target:
        chunks = call(sdk, target, "hello", stream=True, incremental_output=True)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            read_all(chunks)
    assert received == [default_reply("hello", [])[:4]]


def test_the_printed_environment_points_the_sdk_at_the_simulator(sdk: Any, tmp_path: Path) -> None:
    """The export line tyqw simulate prints is enough: Application.call reads
    DASHSCOPE_HTTP_BASE_URL and DASHSCOPE_API_KEY at import and reaches the simulator."""
    script = (
        "import os\n"
        "from dashscope import Application\n"
        "r = Application.call(app_id=os.environ['DASHSCOPE_APP_ID'], prompt='hello')\n"
        "print(int(r.status_code), r.output.text)\n"
    )
    with simulate(tmp_path / "server") as sim:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", script],
            capture_output=True,
            text=True,
            env=child_env(tmp_path, **sim.exports),
            timeout=BOUND,
            check=False,
        )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"200 {default_reply('hello', [])}\n"
