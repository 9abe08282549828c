"""The API key never leaks: not in a repr, an exception, a log record or a state file.

One test drives a Session through every fault scenario with a recognisable key, logging
at DEBUG on every logger, and then greps everything it produced.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tyqw
from tyqw import Session, _retry
from tyqw.testing import BailianSimulator, Fault

SECRET = "sk-tyqw-secret-7f3a9c1e5b2d4680"
WRONG = "sk-tyqw-wrong-0b1c2d3e4f5a6978"
# A fragment as well: a key cut short in an excerpt is still a leak.
NEEDLES = (SECRET, WRONG, SECRET[8:24], WRONG[8:24])
BOUND = 5.0


@pytest.fixture
async def secret_sim() -> AsyncIterator[BailianSimulator]:
    async with BailianSimulator(api_key=SECRET) as simulator:
        yield simulator


def leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


def describe(error: BaseException) -> str:
    """Everything a program might print about an error: str, repr, the traceback with
    chained causes, and the partial reply it carries.
    """
    parts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    reply = getattr(error, "reply", None)
    if reply is not None:
        parts.append(repr(reply))
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


async def test_the_key_never_leaks(
    secret_sim: BailianSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """repr of every object, every error raised or emitted (with its causes and
    traceback), every log record at DEBUG on every logger, every file tyqw wrote.
    """
    monkeypatch.setattr(_retry, "BACKOFF_BASE", 0.001)
    caplog.set_level(logging.DEBUG)  # the root logger: tyqw, aiohttp and asyncio alike
    sim = secret_sim
    state_dir = tmp_path / "state"
    texts: list[str] = []
    errors: list[BaseException] = []

    def make(**kwargs: Any) -> Session:
        kwargs.setdefault("api_key", SECRET)
        kwargs.setdefault("base_url", sim.base_url)
        kwargs.setdefault("state_dir", state_dir)
        session = Session(sim.app_id, **kwargs)
        texts.append(repr(session))
        return session

    async def turn(session: Session, fault: Fault | None = None, **options: Any) -> None:
        if fault is not None:
            sim.inject(fault)
        try:
            reply = await asyncio.wait_for(session.send("hello there", **options), BOUND)
            texts.append(repr(reply))
        except tyqw.TyqwError as exc:
            errors.append(exc)

    async with make() as session:
        session.on("message", lambda m: texts.extend([repr(m), repr(m.raw)]))
        await turn(session)
        await turn(session, Fault.http(503, retry_after_ms=5))
        sim.inject(Fault.http(429, retry_after_ms=5), times=3)  # retries exhausted
        await turn(session)
        for fault in [
            Fault.http(400),
            Fault.http(403, "Workspace.AccessDenied"),
            Fault.stream_error(after=2, status=500),
            Fault.stream_error(after=0, status=400, code="DataInspectionFailed"),
            Fault.cut(after=2),
            Fault.truncate(after=1),
            Fault.malformed(after=1),
            Fault.content_type(),
            Fault.content_type("text/plain", b"oops", status=502),
        ]:
            await turn(session, fault)
        await turn(session, Fault.http(500), stream=False)
        await turn(session, Fault.truncate(), stream=False)

        stream = session.stream("hello there")
        texts.append(repr(stream))
        async with stream:
            async for message in stream:
                texts.append(repr(message))
        texts.append(repr(stream.reply))

        session.on("message", lambda m: session.abort())
        await turn(session)

    emitted: list[tyqw.TyqwError] = []
    async with make(read_timeout=0.2, max_event_size=1024, deadline=1.0) as session:
        session.on("error", emitted.append)
        session.on("message", lambda m: 1 / 0 if m.finish_reason else None)
        for fault in [
            Fault.stall(30, after=1),
            Fault.headers_stall(30),
            Fault.oversized(4096),
            Fault.malformed(after=1, data='{"foo": 1}'),
        ]:
            await turn(session, fault)
    errors += emitted

    async with make(deadline=0.2) as session:
        await turn(session, Fault.stall(30, after=1))

    async with make(api_key=WRONG) as session:
        await turn(session)  # the simulator answers 401 InvalidApiKey

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make(base_url=f"http://127.0.0.1:{port}/api/v1", max_retries=1) as session:
        await turn(session)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"base_url": "http://example.com/api/v1"}, "allow_insecure_http"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"workspace": "bad workspace"}, "workspace"),
        ({"max_retries": -1}, "max_retries"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            make(**bad)
        errors.append(info.value)
    closed = make()
    await closed.aclose()
    with pytest.raises(tyqw.SessionClosedError) as closed_info:
        await closed.send("hi")
    errors.append(closed_info.value)

    kinds = {type(e) for e in errors}
    assert {
        tyqw.AuthenticationError,
        tyqw.BadRequestError,
        tyqw.PermissionDeniedError,
        tyqw.RateLimitError,
        tyqw.InternalServerError,
        tyqw.IncompleteStreamError,
        tyqw.StreamError,
        tyqw.UnexpectedContentTypeError,
        tyqw.EventTooLargeError,
        tyqw.APITimeoutError,
        tyqw.APIConnectionError,
        tyqw.HandlerError,
        tyqw.SessionClosedError,
        ValueError,
    } <= kinds, "every kind of error was produced and checked"

    for error in errors:
        assert not leaks(describe(error)), describe(error)
    for text in texts:
        assert not leaks(text), text

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = caplog.records
    assert any(r.name == "tyqw" and r.levelno == logging.INFO for r in records)  # retries
    for record in records:
        assert not leaks(formatter.format(record) + repr(record.args)), record.getMessage()
    requests_logged = [r.getMessage() for r in records if r.getMessage().startswith("POST ")]
    assert requests_logged and all("Bearer ***" in m for m in requests_logged)

    files = written_files(tmp_path)
    assert any(path.suffix == ".json" for path in files), "state files were written"
    for path, content in files.items():
        assert not leaks(content.decode("utf-8", "replace")), path


def written_files(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
