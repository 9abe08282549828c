"""Every example runs as is without a key, and fails with one clear line, never a traceback.

Run as a user runs them: ``python examples/NAME.py``, against the built-in simulator (no
key), a simulator in this test's event loop (a key), or in a real pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tyqw import Session
from tyqw.testing import BailianSimulator, run_offline

from .cli_helpers import (
    BOUND,
    EXAMPLES,
    POSIX_ONLY,
    Terminal,
    clean_env,
    example,
    run,
    run_async,
    wait_until_asleep,
)
from .helpers import TcpServerFactory, bailian_event, read_request

ALL = ["chatbot.py", "iterate.py", "many_users.py", "new_conversation.py", "quickstart.py"]
TESTED_ELSEWHERE = ["sync_chat.py"]  # run by tests/test_sync.py
CHAT_INPUT = "你好，我叫小明\n"  # what the chatbot reads; the others read nothing


def run_example(name: str, tmp_path: Path, stdin: str = "") -> str:
    """Run examples/<name> with no DASHSCOPE_* set; return its stdout."""
    result = run(example(name), clean_env(tmp_path), stdin)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def test_every_example_is_tested() -> None:
    """The examples folder holds exactly the examples these tests run."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(ALL + TESTED_ELSEWHERE)


def test_quickstart(tmp_path: Path) -> None:
    """quickstart.py: the second turn remembers the name told in the first."""
    assert run_example("quickstart.py", tmp_path).splitlines() == [
        "很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。",
        "你叫小明。你在前面的对话里告诉过我，我一直记着呢。",
    ]


def test_chatbot(tmp_path: Path) -> None:
    """chatbot.py: lines in, streamed replies out; /new forgets; EOF quits."""
    out = run_example(
        "chatbot.py", tmp_path, stdin="你好，我叫小明\n我叫什么名字？\n/new\n我叫什么名字？\n"
    )
    assert out.split("you> ") == [
        "",
        "bot> 很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。\n",
        "bot> 你叫小明。你在前面的对话里告诉过我，我一直记着呢。\n",
        "(a new conversation)\n",
        "bot> 你还没告诉我你的名字呢。说一句「我叫……」，我就会记住。\n",
        "\n",
    ]


def test_iterate(tmp_path: Path) -> None:
    """iterate.py: two streamed turns of one conversation, with the Reply's details."""
    out = run_example("iterate.py", tmp_path)
    lines = out.splitlines()
    assert lines[0] == "> My name is Ada."
    assert lines[1].startswith("Nice to meet you, Ada!")
    assert lines[3] == "> What's my name?"
    assert lines[4] == "Your name is Ada. You told me earlier in this conversation."
    sessions = re.findall(r"\(stop, \d+ output tokens, session ([0-9a-f]{32})\)", out)
    assert len(sessions) == 2 and sessions[0] == sessions[1]


def test_many_users(tmp_path: Path) -> None:
    """many_users.py: each user's conversation remembers only that user's name."""
    out = run_example("many_users.py", tmp_path)
    assert "bot: Your name is Alice." in out
    assert "bot: Your name is Bob." in out
    assert "bot: 你叫小红。" in out
    stored = sorted(p.name for p in (tmp_path / "xdg-state" / "tyqw").glob("*.json"))
    assert len(stored) == 3


def test_new_conversation(tmp_path: Path) -> None:
    """new_conversation.py: a new Session continues; after clear() the name is forgotten."""
    out = run_example("new_conversation.py", tmp_path)
    sessions = re.findall(r"\(session ([0-9a-f]{32})\)", out)
    assert len(sessions) == 3
    assert sessions[0] == sessions[1] != sessions[2]
    assert "你叫小明。" in out
    assert out.rstrip().splitlines()[-2].startswith("你还没告诉我你的名字呢")


# -- failing as a user sees it ----------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_a_key_without_an_app_id_is_one_line(tmp_path: Path, name: str) -> None:
    """A key but no DASHSCOPE_APP_ID: one line saying what to set, exit 1."""
    result = run(example(name), clean_env(tmp_path, DASHSCOPE_API_KEY="sk-x"), CHAT_INPUT)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: set DASHSCOPE_APP_ID to your app's id (on its card in the console)\n"
    )


@pytest.mark.parametrize("name", ALL)
def test_a_setting_tyqw_refuses_is_one_line(tmp_path: Path, name: str) -> None:
    """An app id tyqw refuses: its reason in one line, exit 1."""
    env = clean_env(tmp_path, DASHSCOPE_API_KEY="sk-x", DASHSCOPE_APP_ID="a/b")
    result = run(example(name), env, CHAT_INPUT)
    assert (result.returncode, result.stdout) == (1, "")
    assert re.fullmatch(r"error: invalid app_id 'a/b': [^\n]*\n", result.stderr), result.stderr


@pytest.mark.parametrize("name", ALL)
async def test_a_failed_turn_is_one_line(tmp_path: Path, name: str) -> None:
    """A wrong key: the 401 is one line (the chatbot prints it and reads on), no traceback."""
    async with BailianSimulator() as sim:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY="sk-wrong",
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        code, out, err = await run_async(example(name), env, CHAT_INPUT)
    what = r"Invalid API-key provided\. \(HTTP 401, code InvalidApiKey, request_id \S+\)\n"
    if name == "chatbot.py":
        assert (code, err) == (0, "")
        assert re.fullmatch(r"you> bot> \n\[error\] " + what + r"you> \n", out), out
    else:
        assert code == 1
        assert re.fullmatch(r"error: " + what, err), err
        assert "Traceback" not in out + err


@POSIX_ONLY
@pytest.mark.parametrize("name", ALL)
async def test_ctrl_c_mid_reply_stops_quietly(
    tmp_path: Path, tcp_server: TcpServerFactory, name: str
) -> None:
    """Ctrl-C (SIGINT) while a reply streams: exit 130, nothing on stderr."""
    streaming = asyncio.Event()

    async def first_event_then_wait(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        writer.write(
            bailian_event(1, {"session_id": "s" * 32, "finish_reason": "null", "text": "Hi"})
        )
        await writer.drain()
        streaming.set()
        await reader.read()  # until the client goes away

    env = clean_env(
        tmp_path,
        DASHSCOPE_API_KEY="sk-x",
        DASHSCOPE_BASE_URL=await tcp_server(first_event_then_wait),
        DASHSCOPE_APP_ID="app",
    )
    proc = await asyncio.create_subprocess_exec(
        *example(name),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(CHAT_INPUT.encode())
        await asyncio.wait_for(streaming.wait(), BOUND)
        await asyncio.to_thread(wait_until_asleep, proc.pid)  # waiting for the rest
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), BOUND)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, err.decode()) == (130, "")


@POSIX_ONLY
def test_chatbot_ctrl_c_at_its_prompt_quits_at_once(tmp_path: Path) -> None:
    """In a terminal, Ctrl-C at the chatbot's prompt quits it at once: no traceback, 0."""
    with Terminal(example("chatbot.py"), clean_env(tmp_path)) as term:
        term.expect("you> ")
        term.type("half a line")
        term.expect("half a line")
        term.idle()
        term.type("\x03")
        assert term.wait() == 0
    assert term.transcript.endswith("you> half a line^C\n")


# -- run_offline() -----------------------------------------------------------------------


async def test_run_offline_points_the_environment_at_a_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """run_offline() sets DASHSCOPE_* for main() only, and restores them afterwards."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-mine")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-mine")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://example.com/api/v1")

    async def main() -> str:
        assert os.environ["DASHSCOPE_API_KEY"] != "sk-mine"
        assert "DASHSCOPE_WORKSPACE" not in os.environ
        assert "DASHSCOPE_HTTP_BASE_URL" not in os.environ
        async with Session(os.environ["DASHSCOPE_APP_ID"], state_dir=tmp_path) as session:
            await session.send("my name is Ada")
            return (await session.send("what's my name?")).text

    assert await run_offline(main, chunk_size=1) == (
        "Your name is Ada. You told me earlier in this conversation."
    )
    assert os.environ["DASHSCOPE_API_KEY"] == "sk-mine"
    assert os.environ["DASHSCOPE_WORKSPACE"] == "ws-mine"
    assert os.environ["DASHSCOPE_HTTP_BASE_URL"] == "https://example.com/api/v1"
    assert "DASHSCOPE_APP_ID" not in os.environ
    assert "DASHSCOPE_BASE_URL" not in os.environ


async def test_run_offline_restores_the_environment_on_error() -> None:
    """An exception from main() propagates and the environment is restored all the same."""

    async def main() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await run_offline(main)
    assert not any(name.startswith("DASHSCOPE_") for name in os.environ)
