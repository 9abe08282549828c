"""``tyqw serve``, run as a subprocess: offline on a fresh machine, with tokens, with a
key, and refusing to start where it would be unsafe."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

import tyqw
from tyqw.testing import BailianSimulator, default_reply

from .relay_helpers import ALICE, BOUND, auth, body, outside_address, post
from .simulate_process import simulate

NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so the relay answers with the built-in offline "
    "simulator (canned replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to relay to "
    "your Bailian app."
)
CANARY = "sk-canary-serve-2b8e4d6f0a1c"
OPEN = re.compile(r"tyqw relay: open (http://\S+)/ in a browser")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-W", "error", "-m", "tyqw", "serve", *args]


class Served:
    """A running ``tyqw serve``: its root URL, then its exit status and stderr."""

    def __init__(self, process: asyncio.subprocess.Process, root: str, first_lines: list[str]):
        self.process = process
        self.root = root
        self.stdout_lines = first_lines
        self.stderr = ""
        self.returncode: int | None = None

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), BOUND)
        self.stdout_lines += stdout.decode().splitlines()
        self.stderr = stderr.decode()
        self.returncode = self.process.returncode


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[object]:
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> Served:
        process = await asyncio.create_subprocess_exec(
            *serve_command("--port", "0", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or clean_env(tmp_path),
        )
        started.append(process)
        assert process.stdout is not None
        lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), BOUND)).decode()
            assert line, f"tyqw serve exited: {(await process.communicate())[1].decode()}"
            lines.append(line.rstrip("\n"))
            if match := OPEN.match(line):
                return Served(process, match.group(1), lines)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_works_offline_on_a_fresh_machine(
    serve: object, http: aiohttp.ClientSession
) -> None:
    """No key, no flags: one stderr line says the simulator answers; the page and the
    endpoint work on loopback without a token; Ctrl-C stops it with status 0."""
    served: Served = await serve()  # type: ignore[operator]
    async with http.get(f"{served.root}/") as page:
        assert page.status == 200 and "tyqw chat" in await page.text()
    async with http.get(f"{served.root}/relay.json") as settings:
        [app_id] = (await settings.json())["app_ids"]
    url = f"{served.root}/api/v1/apps/{app_id}/completion"
    first = await post(http, url, body("my name is Ada"))
    second = await post(http, url, body("what's my name?", first.json["output"]["session_id"]))
    assert "Ada" in second.json["output"]["text"]
    await served.stop()
    assert served.returncode == 0
    assert served.stderr.splitlines() == [NO_KEY_NOTICE, "tyqw: relay stopped"]


def test_serve_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    """--host 0.0.0.0 without --tokens: exit status 2 and one line saying why."""
    result = subprocess.run(
        serve_command("--host", "0.0.0.0", "--port", "0"),
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "tyqw: error: refusing to listen on 0.0.0.0 without authentication: pass "
        "--tokens FILE, or --host 127.0.0.1"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--tokens", "missing.txt"], "cannot read missing.txt", id="no-tokens-file"),
        pytest.param(["--tokens", "short.txt"], "at least 16 characters", id="short-token"),
        pytest.param(["--cors", "*"], "cors origin '*'", id="cors-star"),
        pytest.param(["--prefix", "tyqw"], "--prefix must start with '/'", id="prefix"),
        pytest.param(["--alias", "gpt-4o"], "NAME=TARGET", id="alias-form"),
        pytest.param(["--alias", "gpt-4o=qwen-max"], "does not serve", id="alias-of-nothing"),
    ],
)
def test_serve_reports_a_bad_configuration_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad tokens file, origin or prefix is exit status 2 and one stderr line (after
    the offline notice), before anything listens."""
    (tmp_path / "short.txt").write_text("short alice\n")
    result = subprocess.run(
        serve_command("--port", "0", *args),
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line != NO_KEY_NOTICE]
    assert len(errors) == 1 and errors[0].startswith("tyqw: error: ") and message in errors[0]


def test_serve_rate_takes_turns_per_minute(tmp_path: Path) -> None:
    """--rate wants N/MIN (or N); anything else is a usage error."""
    result = subprocess.run(
        serve_command("--rate", "fast"),
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2 and "expected turns per minute like 30/min" in result.stderr


async def test_serve_with_tokens_a_store_folder_and_a_prefix(
    serve: object, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """--tokens makes a token necessary, --prefix moves everything under /tyqw (the
    original class's path), and --store DIR keeps each user's conversation id there."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{ALICE} alice\n")
    store = tmp_path / "conversations"
    served: Served = await serve(  # type: ignore[operator]
        "--tokens", str(tokens), "--store", str(store), "--prefix", "/tyqw", "--rate", "10/min"
    )
    assert served.root.endswith("/tyqw")
    async with http.get(f"{served.root}/relay.json") as settings:
        info = await settings.json()
    assert info["auth"] == "token"
    url = f"{served.root}/api/v1/apps/{info['app_ids'][0]}/completion"
    assert (await post(http, url, body("hi"))).status == 401
    answer = await post(http, url, body("hello there"), auth())
    assert answer.json["output"]["text"] == default_reply("hello there", [])
    [stored] = tyqw.stored_conversations(store)
    assert (stored.name, stored.session_id) == ("alice", answer.json["output"]["session_id"])
    async with http.get(served.root, allow_redirects=False) as bare:
        assert bare.status == 302 and bare.headers["Location"] == "/tyqw/"
    await served.stop()
    assert served.returncode == 0


async def test_serve_relays_to_the_service_named_by_the_environment_and_never_shows_the_key(
    serve: object, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With DASHSCOPE_API_KEY the upstream is the configured service (no offline notice);
    the key is sent there and appears in no output of the command and no answer."""
    async with BailianSimulator(api_key=CANARY) as sim:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=CANARY,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        served: Served = await serve(env=env)  # type: ignore[operator]
        url = f"{served.root}/api/v1/apps/{sim.app_id}/completion"
        answer = await post(http, url, body("hello there"))
        missing = await post(http, f"{served.root}/api/v1/apps/other/completion", body("hi"))
        await served.stop()
    assert answer.json["output"]["text"] == default_reply("hello there", [])
    assert sim.requests[-1].headers["authorization"] == f"Bearer {CANARY}"
    assert missing.status == 404
    assert served.returncode == 0
    assert served.stderr.splitlines() == ["tyqw: relay stopped"]
    everything = "\n".join(served.stdout_lines) + served.stderr + answer.raw.decode()
    everything += json.dumps(dict(answer.headers)) + missing.raw.decode()
    assert CANARY not in everything


async def test_serve_model_relays_the_generation_endpoint(
    serve: object, http: aiohttp.ClientSession
) -> None:
    """tyqw serve --model qwen-plus: the service's generation path, the client's history
    answered from; a model not listed is refused."""
    served: Served = await serve("--model", "qwen-plus")  # type: ignore[operator]
    url = f"{served.root}/api/v1/services/aigc/text-generation/generation"
    messages = [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Nice to meet you"},
        {"role": "user", "content": "what's my name?"},
    ]
    told = await post(http, url, {"model": "qwen-plus", "input": {"messages": messages}})
    other = await post(http, url, {"model": "qwen-max", "input": {"messages": messages}})
    await served.stop()
    assert told.json["output"]["text"].startswith("Your name is Ada.")
    assert other.status == 404
    assert "  models: qwen-plus" in served.stdout_lines


async def test_serve_model_and_alias_speak_openai(serve: object) -> None:
    """tyqw serve --model qwen-plus --alias gpt-4o=qwen-plus: openai-python lists the app,
    the model and the alias, and chats with the model by its alias, the history resent."""
    served: Served = await serve(  # type: ignore[operator]
        "--delay", "0", "--model", "qwen-plus", "--alias", "gpt-4o=qwen-plus"
    )
    async with openai.AsyncOpenAI(
        base_url=f"{served.root}/v1", api_key="local", max_retries=0, timeout=BOUND
    ) as api:
        listed = [m.id async for m in api.models.list()]
        history: list[Any] = [
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "Nice to meet you"},
            {"role": "user", "content": "what's my name?"},
        ]
        answer = await api.chat.completions.create(model="gpt-4o", messages=history)
    await served.stop()
    assert listed[1:] == ["qwen-plus", "gpt-4o"]
    assert (answer.choices[0].message.content or "").startswith("Your name is Ada.")


async def stalled_head(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends half a request head and then nothing (slowloris)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /api/v1/apps/x/completion HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
    await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the relay sends until it closes the connection (each read bounded)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), BOUND):
            data += chunk
    return data


async def test_serve_drops_stalled_heads_and_caps_connections_per_address(
    serve: object, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Connections from one address past --max-connections-per-peer get a 503 at once
    while other clients are answered; heads that stall are dropped unanswered after
    --head-timeout, and the address is served again."""
    address = outside_address()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{ALICE} alice\n")
    served: Served = await serve(  # type: ignore[operator]
        "--host", "0.0.0.0", "--tokens", str(tokens), "--head-timeout", "2",
        "--max-connections-per-peer", "3",
    )  # fmt: skip
    port = int(served.root.rsplit(":", 1)[1])
    held = [await stalled_head(address, port) for _ in range(3)]
    reader, writer = await asyncio.open_connection(address, port)
    refused = await until_closed(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in refused
    async with http.get(f"{served.root}/relay.json") as settings:  # from loopback
        app_id = (await settings.json())["app_ids"][0]
    assert [await until_closed(reader) for reader, _ in held] == [b"", b"", b""]
    url = f"http://{address}:{port}/api/v1/apps/{app_id}/completion"
    assert (await post(http, url, body("hi"), auth())).status == 200
    for _, writer in held:
        writer.close()
    await served.stop()
    assert served.returncode == 0


async def test_serve_caps_open_connections_and_answers_again_once_stalls_are_dropped(
    serve: object, http: aiohttp.ClientSession
) -> None:
    """Past --max-connections a new connection gets a 503 at once; the stalled ones are
    dropped after --head-timeout and the relay answers again."""
    served: Served = await serve("--head-timeout", "2", "--max-connections", "4")  # type: ignore[operator]
    port = int(served.root.rsplit(":", 1)[1])
    held = [await stalled_head("127.0.0.1", port) for _ in range(4)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await until_closed(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert [await until_closed(reader) for reader, _ in held] == [b""] * 4
    async with http.get(f"{served.root}/relay.json") as settings:
        assert settings.status == 200
    for _, writer in held:
        writer.close()
    await served.stop()
    assert served.returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--head-timeout", "0"],
        ["--body-timeout", "nan"],
        ["--send-timeout", "-1"],
        ["--max-connections", "0"],
        ["--max-connections-per-peer", "x"],
    ],
    ids=lambda a: a[0],
)
def test_serve_refuses_nonsense_bounds(tmp_path: Path, args: list[str]) -> None:
    """Time bounds must be seconds > 0 and connection limits whole numbers >= 1."""
    result = subprocess.run(
        serve_command(*args),
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2 and args[0] in result.stderr


async def test_serve_offline_speaks_openai_to_the_openai_sdk(serve: object) -> None:
    """The banner names the OpenAI base URL, and openai-python chats through it offline:
    the second turn remembers the first."""
    served: Served = await serve("--delay", "0")  # type: ignore[operator]
    async with openai.AsyncOpenAI(
        base_url=f"{served.root}/v1", api_key="local", max_retries=0, timeout=BOUND
    ) as api:
        [model] = [m.id async for m in api.models.list()]
        history: list[Any] = [{"role": "user", "content": "my name is Ada"}]
        first = await api.chat.completions.create(model=model, messages=history)
        history += [
            {"role": "assistant", "content": first.choices[0].message.content or ""},
            {"role": "user", "content": "what's my name?"},
        ]
        second = await api.chat.completions.create(model=model, messages=history)
    assert "Ada" in (second.choices[0].message.content or "")
    await served.stop()
    assert (
        f"  OpenAI clients: base URL {served.root}/v1; AI SDK useChat: POST {served.root}/api/chat"
        in served.stdout_lines
    )


async def test_simulate_faults_reach_openai_clients_of_serve_as_their_own_errors(
    serve: object, tmp_path: Path
) -> None:
    """tyqw serve in front of tyqw simulate --fault: a refused request is openai's
    BadRequestError, throttling (past the relay's own retries) RateLimitError, and a
    stream cut by the service's error APIError."""
    faults = ["http:400", "http:429x3", "error:400,DataInspectionFailed@2"]
    with simulate(tmp_path, *(arg for spec in faults for arg in ("--fault", spec))) as sim:
        env = clean_env(tmp_path, **sim.exports)
        served: Served = await serve(env=env)  # type: ignore[operator]
        model = sim.exports["DASHSCOPE_APP_ID"]
        hi: Any = [{"role": "user", "content": "hello there"}]
        async with openai.AsyncOpenAI(
            base_url=f"{served.root}/v1", api_key="local", max_retries=0, timeout=BOUND
        ) as api:
            with pytest.raises(openai.BadRequestError):
                await api.chat.completions.create(model=model, messages=hi)
            with pytest.raises(openai.RateLimitError):
                await api.chat.completions.create(model=model, messages=hi)
            # Before the first chunk it is the HTTP status (BadRequestError), after it an
            # error event: openai.APIError either way.
            with pytest.raises(openai.APIError, match="inappropriate"):
                await collect(
                    await api.chat.completions.create(model=model, messages=hi, stream=True)
                )
        await served.stop()
    assert served.returncode == 0


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]
