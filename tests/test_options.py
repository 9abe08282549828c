"""Options of a turn: each lands where the service expects it; per-call overrides change
one turn only; the key, proxies and logging come from where the official SDK reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import tyqw
from tyqw import Session
from tyqw.testing import BailianSimulator, Fault

from .helpers import (
    SessionFactory,
    TcpServerFactory,
    bailian_event,
    raw_session,
    reachable_strings,
    read_request,
)

BOUND = 5.0

# name -> (a value, where it must land)
PLACES: dict[str, tuple[Any, str]] = {
    "biz_params": ({"user_prompt_params": {"city": "杭州"}}, "input"),
    "memory_id": ("mem-1", "input"),
    "image_list": (["https://example.com/1.png"], "input"),
    "file_list": (["https://example.com/a.pdf"], "input"),
    "doc_reference_type": ("indexed", "input"),
    "doc_tag_codes": (["tag-a", "tag-b"], "input"),
    "has_thoughts": (True, "parameters"),
    "incremental_output": (False, "parameters"),
    "rag_options": (
        {
            "pipeline_ids": ["kb-1"],
            "file_ids": ["f-1"],
            "tags": ["t"],
            "metadata_filter": {"k": "v"},
            "structured_filter": {"year": 2024},
            "session_file_ids": ["s-1"],
        },
        "parameters",
    ),
    "flow_stream_mode": ("agent_format", "parameters"),
    "enable_thinking": (False, "parameters"),
    "enable_web_search": (True, "parameters"),
    "enable_system_time": (True, "parameters"),
    "enable_premium": (False, "parameters"),
    "dialog_round": (3, "parameters"),
    "model_id": ("qwen-max", "parameters"),
    "mcp_servers": (["mcp-1"], "parameters"),
    "temperature": (0.7, "parameters"),
    "top_p": (0.8, "parameters"),
    "top_k": (50, "parameters"),
    "seed": (1234, "parameters"),
}


@pytest.mark.parametrize("name", list(PLACES))
async def test_each_option_lands_where_the_service_expects_it(
    make_session: SessionFactory, sim: BailianSimulator, name: str
) -> None:
    """The request the service receives has the option in input or parameters, as given."""
    value, place = PLACES[name]
    await make_session().send("hi", **{name: value})
    body = sim.requests[0].body
    assert body[place][name] == value
    other = "parameters" if place == "input" else "input"
    assert name not in body[other]


async def test_input_and_parameters_are_merged_last(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Keys tyqw does not know yet go through input= / parameters=, and win."""
    await make_session().send(
        "hi",
        has_thoughts=False,
        input={"extra": 1},
        parameters={"has_thoughts": True, "cip_service_codes": {"text": {"input": "x"}}},
    )
    body = sim.requests[0].body
    assert body["input"]["extra"] == 1
    assert body["parameters"]["has_thoughts"] is True
    assert body["parameters"]["cip_service_codes"] == {"text": {"input": "x"}}


async def test_an_unknown_option_says_how_to_pass_it(make_session: SessionFactory) -> None:
    """A typo is a TypeError naming input= and parameters=, never silently dropped."""
    with pytest.raises(TypeError, match=r"input=\{...\} or parameters=\{...\}"):
        await make_session().send("hi", enable_websearch=True)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"), [("flow_stream_mode", "fast"), ("doc_reference_type", "full")]
)
async def test_an_option_with_choices_refuses_others(
    make_session: SessionFactory, name: str, value: str
) -> None:
    """flow_stream_mode and doc_reference_type take only the documented values."""
    options: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=name):
        await make_session().send("hi", **options)


# -- per-call overrides ---------------------------------------------------------------------


async def test_per_call_headers_are_sent_for_that_turn_only(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """headers= adds headers to one request; the next turn does not carry them."""
    session = make_session()
    await session.send("hi", headers={"X-DashScope-DataInspection": "enable"})
    await session.send("again")
    assert sim.requests[0].headers["x-dashscope-datainspection"] == "enable"
    assert "x-dashscope-datainspection" not in sim.requests[1].headers


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Host", "Content-Length"])
async def test_per_call_headers_cannot_replace_what_tyqw_sets(
    make_session: SessionFactory, sim: BailianSimulator, name: str
) -> None:
    """The key (and the framing) cannot be overridden: ValueError, nothing sent."""
    with pytest.raises(ValueError, match="cannot be overridden"):
        await make_session().send("hi", headers={name: "Bearer sk-other"})
    assert sim.requests == []


async def test_per_call_workspace(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """workspace= changes one turn's X-DashScope-WorkSpace; "" removes it for that turn."""
    session = make_session(workspace="ws-session")
    await session.send("hi", workspace="ws-call")
    await session.send("hi", workspace="")
    await session.send("hi")
    seen = [r.headers.get("x-dashscope-workspace") for r in sim.requests]
    assert seen == ["ws-call", None, "ws-session"]


async def test_per_call_read_timeout(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """read_timeout= tightens one turn's idle limit; the Session's stays as it was."""
    session = make_session(read_timeout=60)
    sim.inject(Fault.stall(30, after=1))
    with pytest.raises(tyqw.APITimeoutError, match=r"0\.2s"):
        await asyncio.wait_for(session.send("hi", read_timeout=0.2), BOUND)
    assert session.read_timeout == 60
    assert (await session.send("again")).finish_reason == "stop"


async def test_per_call_deadline(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """deadline= bounds one turn; deadline=None lifts the Session's for that turn."""
    session = make_session(deadline=60)
    sim.inject(Fault.stall(30, after=1))
    with pytest.raises(tyqw.APITimeoutError, match=r"deadline of 0\.2s"):
        await asyncio.wait_for(session.send("hi", deadline=0.2), BOUND)
    sim.delay = 0.05
    assert (await session.send("slow", deadline=None)).finish_reason == "stop"


async def test_per_call_session_id_leaves_the_sessions_conversation_alone(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """session_id= continues another conversation for one turn; the Session's own
    conversation (and its stored id) is unchanged."""
    other = make_session(name="other")
    theirs = await other.send("my name is Ada")
    assert theirs.session_id is not None
    mine = make_session(name="mine")
    own = await mine.send("hello")
    borrowed = await mine.send("what's my name?", session_id=theirs.session_id)
    assert "Ada" in borrowed.text and borrowed.session_id == theirs.session_id
    assert mine.session_id == own.session_id
    assert sim.requests[-1].body["input"]["session_id"] == theirs.session_id
    assert "Ada" not in (await mine.send("what's my name?")).text


# -- where the key comes from ----------------------------------------------------------------


def test_key_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key=, then DASHSCOPE_API_KEY, then DASHSCOPE_API_KEY_FILE_PATH, then
    ~/.dashscope/api_key: the official SDK's order."""
    from tyqw import _config
    from tyqw._config import find_api_key

    # The tests' fixture points the default key file into the test's folder; here the
    # real default, under HOME.
    monkeypatch.setattr(_config, "DEFAULT_KEY_FILE", Path("~/.dashscope/api_key"))
    home = tmp_path / "home"
    (home / ".dashscope").mkdir(parents=True)
    (home / ".dashscope" / "api_key").write_text("sk-from-home\n")
    monkeypatch.setenv("HOME", str(home))
    assert find_api_key() == "sk-from-home"
    named = tmp_path / "key.txt"
    named.write_text("  sk-from-named-file\n")
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(named))
    assert find_api_key() == "sk-from-named-file"
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-env")
    assert find_api_key() == "sk-from-env"
    assert find_api_key("sk-argument") == "sk-argument"


def test_a_missing_named_key_file_is_a_missing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DASHSCOPE_API_KEY_FILE_PATH that names no file says so."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(tmp_path / "nope"))
    with pytest.raises(tyqw.MissingAPIKeyError, match="nope"):
        Session("app", state_dir=tmp_path)


async def test_a_session_uses_the_key_file(
    sim: BailianSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only a key file, a Session authenticates with its content."""
    monkeypatch.setenv("HOME", str(tmp_path))
    keyfile = tmp_path / "k"
    keyfile.write_text(sim.api_key + "\n")
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(keyfile))
    async with Session(sim.app_id, base_url=sim.base_url, state_dir=tmp_path / "s") as session:
        assert (await session.send("hi")).finish_reason == "stop"


# -- TYQW_LOG -------------------------------------------------------------------------------


def test_tyqw_log_debug_logs_to_stderr_with_the_key_redacted(tmp_path: Path) -> None:
    """TYQW_LOG=debug shows each request on stderr, the key as Bearer ***."""
    script = (
        "import asyncio\n"
        "from tyqw import Session\n"
        "from tyqw.testing import BailianSimulator\n"
        "async def main():\n"
        "    async with BailianSimulator(api_key='sk-logged-secret-1234') as sim:\n"
        "        async with Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url,\n"
        f"                           state_dir={str(tmp_path)!r}) as s:\n"
        "            await s.send('hi')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "TYQW_LOG": "debug"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "POST http://127.0.0.1:" in done.stderr and "Bearer ***" in done.stderr
    assert "sk-logged-secret-1234" not in done.stderr + done.stdout


# -- proxies --------------------------------------------------------------------------------


async def start_forward_proxy(sim: BailianSimulator) -> tuple[web.AppRunner, str, list[str]]:
    """An HTTP forward proxy on 127.0.0.1 that sends every request on to the simulator."""
    seen: list[str] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(str(request.url))
        target = sim.base_url.rsplit("/api/v1", 1)[0] + request.path
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with (
            aiohttp.ClientSession() as client,
            client.post(target, data=await request.read(), headers=headers) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for piece in upstream.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", seen


async def test_http_proxy_from_the_environment(
    sim: BailianSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured by default; trust_env=False and NO_PROXY turn it off."""
    runner, proxy_url, seen = await start_forward_proxy(sim)
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        options: dict[str, Any] = {
            "api_key": sim.api_key,
            "base_url": "http://bailian.proxied.test/api/v1",
            "allow_insecure_http": True,
            "state_dir": tmp_path,
            "max_retries": 0,
        }
        async with Session(sim.app_id, **options) as session:
            assert (await session.send("hi")).finish_reason == "stop"
        assert seen and seen[0].startswith("http://bailian.proxied.test/api/v1/apps/")
        offs: list[dict[str, Any]] = [{"trust_env": False}, {}]
        for off in offs:
            if not off:
                monkeypatch.setenv("NO_PROXY", "proxied.test")
            async with Session(sim.app_id, **options, **off) as session:
                with pytest.raises(tyqw.APIConnectionError):
                    await session.send("hi")  # straight to a host that does not exist
        assert len(seen) == 1
    finally:
        await runner.cleanup()


async def start_connect_proxy() -> tuple[asyncio.Server, int]:
    """A proxy that accepts every CONNECT and then answers with bytes that are not TLS."""

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            writer.write(b"this is not a TLS handshake\r\n" * 4)
            await writer.drain()
            await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_proxy_password_is_in_no_error(tmp_path: Path) -> None:
    """HTTPS through a proxy with credentials, and the TLS handshake in the tunnel fails:
    aiohttp's error names the connection with the proxy's login; tyqw's error, its causes
    and everything reachable from them hold neither that password nor the API key."""
    server, port = await start_connect_proxy()
    try:
        async with Session(
            "app",
            api_key="sk-proxy-test-key",
            base_url="https://bailian.proxied.test/api/v1",
            proxy=f"http://relay-user:proxy-pw-7f3a@127.0.0.1:{port}",
            state_dir=tmp_path,
            max_retries=0,
        ) as session:
            with pytest.raises(tyqw.APIConnectionError) as info:
                await session.send("hi")
    finally:
        server.close()
        await server.wait_closed()
    strings = reachable_strings(info.value)
    assert any("ConnectionKey(" in s and "bailian.proxied.test" in s for s in strings)
    assert not [s for s in strings if "proxy-pw-7f3a" in s or "sk-proxy-test-key" in s]


def test_loopback_is_never_proxied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local simulator is reached directly even with a proxy in the environment."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    session = Session(
        "app", api_key="sk-x", base_url="http://127.0.0.1:1/api/v1", state_dir=tmp_path
    )
    assert session._config.proxy is None
    remote = Session("app", api_key="sk-x", state_dir=tmp_path)
    assert remote._config.proxy == "http://127.0.0.1:9"  # https base URL: HTTPS_PROXY


# -- event names in another case ------------------------------------------------------------


@pytest.mark.parametrize(("result", "error"), [("Result", "Error"), ("RESULT", "ERROR")])
async def test_event_types_are_read_case_insensitively(
    tcp_server: TcpServerFactory, state_dir: Path, result: str, error: str
) -> None:
    """event: Result frames are results (the last one ends the reply), event: Error an
    error, whatever their case."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = bailian_event(1, {"text": "好", "finish_reason": "null"}).replace(
            b"event:result", f"event: {result}".encode()
        )
        body += bailian_event(2, {"text": "", "finish_reason": "stop"}).replace(
            b"event:result", f"event:{result}".encode()
        )
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        writer.write(head + body)
        await writer.drain()

    base_url = await tcp_server(script)
    async with raw_session(base_url, state_dir) as session:
        reply = await session.send("hi")
    assert (reply.text, reply.finish_reason) == ("好", "stop")

    async def failing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        frame = (
            f"id:1\nevent:{error}\n:HTTP_STATUS/429\n"
            'data:{"code":"Throttling","message":"slow down","request_id":"r1"}\n'
        )
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        writer.write(head + frame.encode())
        await writer.drain()

    async with raw_session(await tcp_server(failing), state_dir, max_retries=0) as session:
        with pytest.raises(tyqw.RateLimitError) as info:
            await session.send("hi")
    assert (info.value.code, info.value.request_id) == ("Throttling", "r1")
